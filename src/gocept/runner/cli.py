"""The console command: a worker run as a Unix program.

Arguments come from the command line, the outcome is the exit status, and
an error the user can cause is one line on stderr (a traceback only with
``--debug``).
"""

import argparse
import importlib
import inspect
import math
import os
import re
import sys
import textwrap
import traceback

from gocept.runner import assembly
from gocept.runner import host
from gocept.runner import signals
from gocept.runner import status
from gocept.runner.config import ConfigurationError
from gocept.runner.status import EX_FAILURE  # noqa: F401 (API)
from gocept.runner.status import EX_INTERRUPTED  # noqa: F401 (API)
from gocept.runner.status import EX_OK  # noqa: F401 (API)
from gocept.runner.status import EX_TEMPFAIL  # noqa: F401 (API)
from gocept.runner.status import EX_USAGE
from gocept.runner.status import exit_status
from gocept.runner.status import process_status as host_status


# The environment variable naming zope.conf when -C/--config is not given.
CONFIG_VARIABLE = 'GOCEPT_RUNNER_CONFIG'

# gocept-runner's configuration when none is given: ./var/Data.fs and the
# minimal site ZCML.
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, 'default.conf')

# A word of the command line that names a worker.
WORKER_NAME = re.compile(r'[A-Za-z_][\w.]*:[A-Za-z_][\w.]*')

EPILOG = f"""\
zope.conf is the file given by -C/--config, else the one ${CONFIG_VARIABLE}
names.  {status.describe()}"""


def program(decorator, worker):
    """Run `worker`, decorated by `decorator` (an appmain), as a program:
    parse ``sys.argv``, exit.

    Without the decorator's `arguments`, the words that are not options of
    the program (and all after ``--``) are left in ``sys.argv[1:]`` for the
    worker, in order.  With them, the worker is called with the Namespace of
    its own arguments.
    """
    parser = program_parser(decorator, worker)
    if decorator.arguments is None:
        args = _parse_with_rest(parser, sys.argv[1:])
        arguments = None
    else:
        arguments, args = _parse_declared(
            parser, decorator.arguments, sys.argv[1:])
    config = args.config or _config_variable(parser)
    if not config:
        parser.error(
            f'no zope.conf: give -C/--config or set ${CONFIG_VARIABLE}')
    overrides = production_options(args)
    for name in ('lock_file', 'ticks'):
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    if arguments is None:
        sys.argv[1:] = args.rest

    def run_worker():
        _make_var(config)
        return decorator.run(worker, args.site, config, arguments=arguments,
                             **overrides)

    sys.exit(_execute(parser.prog, args.debug, run_worker, exiting=True))


def program_parser(decorator, worker, prog=None):
    """The argparse parser of `worker`, decorated by `decorator`, as a
    program (without the worker's declared `arguments`)."""
    parser = _parser(prog, _description(decorator, worker), required=True)
    if not decorator.once:
        parser.add_argument(
            '--ticks', type=_seconds, metavar='SECONDS',
            help=f'seconds to sleep between two ticks (default:'
                 f' {decorator.ticks:g})')
    if decorator.arguments is None:
        _add_rest(parser)
    return parser


def script(prog='gocept-runner'):
    """The ``gocept-runner`` console script: `main`, then exit."""
    sys.exit(main(prog=prog, exiting=True))


def main(argv=None, prog='gocept-runner', exiting=False):
    """The ``gocept-runner`` command: run MODULE:FUNCTION in a main loop;
    return the exit status.  `exiting`: the process exits afterwards (see
    `gocept.runner.signals.handled`).

    The words after MODULE:FUNCTION that are not options (and all after
    ``--``) are the worker's: left in ``sys.argv[1:]``, or parsed by the
    ``arguments`` of a decorated worker.  Several MODULE:FUNCTION words
    at the start run those workers in one process (see gocept.runner.host);
    they take no arguments of their own.
    """
    parser = main_parser(prog)
    args = _parse_with_rest(
        parser, sys.argv[1:] if argv is None else list(argv))
    config = args.config or _config_variable(parser) or DEFAULT_CONFIG
    functions = [args.function]
    while (len(args.rest) > args.after_dashes and
           WORKER_NAME.fullmatch(args.rest[0])):
        functions.append(args.rest.pop(0))
    if len(functions) > 1:
        if args.rest:
            parser.error(
                f'{args.rest[0]!r}: several workers take no arguments of'
                ' their own')
        return _execute(parser.prog, args.debug,
                        lambda: _run_host(args, functions, config), exiting,
                        status_of=host_status)

    def run_function():
        worker = resolve(args.function)
        decorator = getattr(worker, 'decorator', None)
        arguments = None
        if decorator is not None and decorator.arguments is not None:
            arguments, _ = _parse_declared(
                _ArgumentParser(prog=f'{parser.prog} {args.function}',
                                add_help=False),
                decorator.arguments, args.rest)
        elif argv is None:
            sys.argv[1:] = args.rest
        _make_var(config)
        options = loop_options(args)
        if decorator is not None:
            return decorator.run(worker.__wrapped__, args.site, config,
                                 arguments=arguments, **options)
        return assembly.run_worker(worker, args.site, config, **options)

    return _execute(parser.prog, args.debug, run_function, exiting)


def main_parser(prog='gocept-runner'):
    """The argparse parser of the ``gocept-runner`` command."""
    parser = _parser(
        prog,
        'Run FUNCTION of MODULE (a function taking no arguments, or a worker'
        ' decorated with appmain or once) in a main loop against the ZODB'
        ' and site that zope.conf describes; without configuration, a'
        ' FileStorage in ./var/Data.fs and a minimal site.')
    parser.add_argument(
        'function', metavar='MODULE:FUNCTION',
        help='the worker, e.g. mypackage.jobs:cleanup (the current directory'
             ' is searched for MODULE first); more MODULE:FUNCTION words'
             ' after it run those workers, too, in this one process')
    _add_rest(parser)
    parser.add_argument(
        '--ticks', type=_seconds, metavar='SECONDS',
        help="seconds to sleep between two ticks (default: a decorated"
             " worker's, else 1)")
    parser.add_argument(
        '--once', action='store_true', default=None,
        help='run a single tick (for cron); its failure is exit status 1')
    parser.add_argument(
        '--principal', type=_not_empty, metavar='ID',
        help='run each tick in a security interaction of this principal')
    return parser


def _run_host(args, functions, config):
    """Run the workers `functions` names in one process; return the Host.
    """
    options = loop_options(args)
    process = {name: options.pop(name) for name in
               ('lock_file', 'max_runtime', 'max_memory', 'heartbeat',
                'metrics', 'metrics_file') if name in options}
    workers = [host.Worker(resolve(name), site_name=args.site, **options)
               for name in functions]
    _make_var(config)
    return host.Host(workers, **process).run(config)


def loop_options(args):
    """The settings the command line of gocept-runner gives (those it
    does not give are left out)."""
    options = dict(production_options(args), ticks=args.ticks,
                   once=args.once, principal=args.principal,
                   lock_file=args.lock_file)
    return {name: value for name, value in options.items()
            if value is not None}


def production_options(args):
    """The limits, health and metrics options given on the command line."""
    names = ('max_ticks', 'max_runtime', 'max_memory', 'heartbeat',
             'metrics', 'metrics_file')
    return {name: getattr(args, name) for name in names
            if getattr(args, name) is not None}


def _add_rest(parser):
    parser.add_argument(
        'rest', nargs='*', metavar='ARG',
        help="the worker's own arguments, left in sys.argv[1:] (after --"
             " if one starts with -)")


def _parse_with_rest(parser, argv):
    """Parse `argv`, options and words in any order; the words and all
    after the first ``--`` are ``rest``."""
    # parse_intermixed_args takes an option after -- for one of its own.
    after = []
    if '--' in argv:
        index = argv.index('--')
        argv, after = argv[:index], argv[index + 1:]
    args = parser.parse_intermixed_args(argv)
    args.rest += after
    args.after_dashes = len(after)
    return args


def _parse_declared(parser, declare, argv):
    """Parse `argv` with `parser` and the arguments `declare` adds to it;
    return the Namespace of those and the one of all."""
    own = set(vars(parser.parse_args([])))
    declare(parser.add_argument_group('arguments of the worker'))
    args = parser.parse_args(argv)
    arguments = argparse.Namespace(**{
        name: value for name, value in vars(args).items()
        if name not in own})
    return arguments, args


def parse_arguments(declare, argv, prog=None):
    """The Namespace of the arguments `declare` (a decorator's
    ``arguments``) adds to a parser, parsed from `argv`."""
    arguments, _ = _parse_declared(
        _ArgumentParser(prog=prog, add_help=False), declare, argv)
    return arguments


def _description(decorator, worker):
    """A decorated worker's docstring and what the program will do."""
    if decorator.once:
        does = ['It runs a single tick']
    else:
        does = [f'It runs a tick every {decorator.ticks:g} seconds']
    if callable(decorator.principal):
        does.append('as the principal its configuration names')
    elif decorator.principal:
        does.append(f'as the principal {decorator.principal}')
    if decorator.lock_file:
        does.append(f'holding the lock file {decorator.lock_file}')
    doc = inspect.getdoc(worker)
    return (f'{doc}\n\n' if doc else '') + ', '.join(does) + '.'


def _config_variable(parser):
    """The zope.conf that $GOCEPT_RUNNER_CONFIG names, None if it is unset."""
    config = os.environ.get(CONFIG_VARIABLE)
    if config == '':
        # Set from an unset shell variable, say: not the default zope.conf.
        parser.error(f'${CONFIG_VARIABLE} is empty: name a zope.conf or unset'
                     ' it')
    return config


def _make_var(zope_conf):
    # The zope.conf files of this package keep their FileStorage in ./var,
    # which a newcomer has not made.
    if os.path.dirname(os.path.abspath(zope_conf)) == HERE:
        os.makedirs('var', exist_ok=True)


def resolve(name):
    """The callable that ``MODULE:FUNCTION`` names.

    Raises ConfigurationError if it cannot be imported or is not callable.
    """
    module_name, _, attribute = name.partition(':')
    if not module_name or not attribute:
        raise ConfigurationError(
            f'{name!r} is not of the form MODULE:FUNCTION')
    # Like ``python -m``: a newcomer's mymodule.py in the current directory
    # is found (a console script's sys.path does not contain it).
    if os.getcwd() not in sys.path and '' not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:
        raise ConfigurationError(
            f'Cannot import {module_name}: {type(e).__name__}: {e}') from e
    for part in attribute.split('.'):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(
                f'{module_name} has no {attribute}') from None
    if not callable(obj):
        raise ConfigurationError(f'{name} is not callable')
    return obj


def _execute(prog, debug, run_loop, exiting=False, status_of=exit_status):
    """Call `run_loop`; return the exit status (`status_of` what it
    returned).

    The signals are handled from here on (see gocept.runner.signals): one
    that arrives while the worker's module is imported is not fatal either.
    """
    try:
        with signals.handled(exiting=exiting):
            loop = run_loop()
    except Exception as error:
        if debug:
            traceback.print_exc()
        code, message = status.failure(error)
        # One line, whatever the message looks like.
        print(f'{prog}: {" ".join(message.split())}', file=sys.stderr)
        return code
    return status_of(loop)


class _ArgumentParser(argparse.ArgumentParser):

    def error(self, message):
        """A usage error: one line on stderr, exit status 2."""
        self.exit(EX_USAGE, f'{self.prog}: {message} (see --help)\n')


def _parser(prog, description, required=False):
    parser = _ArgumentParser(
        prog=prog, description=description, epilog=EPILOG,
        formatter_class=_HelpFormatter)
    if os.environ.get(CONFIG_VARIABLE):
        default = (f'default: ${CONFIG_VARIABLE}, which is'
                   f' {os.environ[CONFIG_VARIABLE]}')
    elif required:
        default = f'required unless ${CONFIG_VARIABLE} names one'
    else:
        default = (f'default: ${CONFIG_VARIABLE} if set, else the embedded'
                   ' default.conf: a FileStorage in ./var/Data.fs, the'
                   ' minimal site, log messages on stderr')
    parser.add_argument(
        '-C', '--config', type=_not_empty, metavar='PATH',
        help=f'the zope.conf to use ({default})')
    parser.add_argument(
        '-s', '--site', type=_not_empty, metavar='NAME',
        help='the item of the root folder to use as site (default: the root'
             ' folder)')
    parser.add_argument(
        '--lock-file', type=_not_empty, metavar='PATH',
        help='hold this lock file for the whole run; if another run holds'
             ' it, exit at once with status 75')
    parser.add_argument(
        '--max-ticks', type=_positive_int, metavar='N',
        help='stop after N ticks, with exit status 75')
    parser.add_argument(
        '--max-runtime', type=_runtime, metavar='SECONDS',
        help='stop after the tick that ends SECONDS after the start, with'
             ' exit status 75')
    parser.add_argument(
        '--max-memory', type=_bytes, metavar='SIZE',
        help='stop after the tick that leaves the resident memory at SIZE'
             ' (bytes, or with a suffix K, M or G) or more, with exit status'
             ' 75')
    parser.add_argument(
        '--heartbeat', type=_not_empty, metavar='PATH',
        help='update the modification time of this file after every tick')
    parser.add_argument(
        '--metrics', type=_metrics_address, metavar='[HOST:]PORT',
        help='serve Prometheus metrics over HTTP on this port of 127.0.0.1,'
             ' or of HOST (needs the metrics extra)')
    parser.add_argument(
        '--metrics-file', type=_not_empty, metavar='PATH',
        help="write Prometheus metrics to this file at the run's end, for"
             " node_exporter's textfile collector (needs the metrics"
             " extra)")
    parser.add_argument(
        '--debug', action='store_true',
        help='show the traceback of an error')
    parser.add_argument(
        '--version', action=_Version, nargs=0,
        help="show the program's version and exit")
    return parser


class _HelpFormatter(argparse.HelpFormatter):
    """Help text 78 columns wide, whatever the width of the terminal, with
    paths and other long words never broken, and the paragraphs of the
    description and epilog filled."""

    def __init__(self, prog):
        super().__init__(prog, width=78)

    def _split_lines(self, text, width):
        return textwrap.wrap(' '.join(text.split()), width,
                             break_long_words=False, break_on_hyphens=False)

    def _fill_text(self, text, width, indent):
        return '\n\n'.join(
            textwrap.fill(' '.join(paragraph.split()), width,
                          initial_indent=indent, subsequent_indent=indent,
                          break_long_words=False, break_on_hyphens=False)
            for paragraph in re.split(r'\n\s*\n', text.strip()))


def _not_empty(value):
    if not value:
        raise argparse.ArgumentTypeError('must not be empty')
    return value


def _metrics_address(value):
    from gocept.runner import metrics
    try:
        metrics.address(value)
    except ConfigurationError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


# The longest time in seconds an option may give.
_YEAR = 365 * 24 * 60 * 60


def _seconds(value):
    seconds = _float(value)
    if not 0 <= seconds <= _YEAR:
        raise argparse.ArgumentTypeError(
            f'{value!r} is not a number of seconds from 0 to a year')
    return seconds


def _runtime(value):
    # Not 0: no tick would run (see gocept.runner.limits.check).
    seconds = _seconds(value)
    if seconds == 0:
        raise argparse.ArgumentTypeError(
            f'{value!r} is not a number of seconds above 0, up to a year')
    return seconds


def _float(value):
    try:
        return float(value)
    except ValueError:
        return math.nan


def _positive_int(value):
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(
            f'{value!r} is not a positive whole number')
    return number


_UNITS = {'': 1, 'K': 1024, 'M': 1024 ** 2, 'G': 1024 ** 3}


def _bytes(value):
    number, unit = value[:-1], value[-1:].upper()
    if unit not in _UNITS or unit == '':
        number, unit = value, ''
    try:
        size = int(float(number) * _UNITS[unit])
    except (ValueError, OverflowError):
        # Not a number, NaN or infinite.
        size = 0
    if size < 1:
        raise argparse.ArgumentTypeError(f'{value!r} is not a size in bytes')
    return size


class _Version(argparse.Action):
    # Not argparse's "version" action: that needs the text up front, and
    # finding it costs a scan of all installed distributions.

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version(parser.prog))
        parser.exit()


def _version(prog):
    """``prog (its distribution and version, gocept.runner's version)``."""
    # Imported here: it costs every program's start-up some milliseconds.
    import importlib.metadata
    runner = f'gocept.runner {importlib.metadata.version("gocept.runner")}'
    entry_points = importlib.metadata.entry_points(
        group='console_scripts', name=prog)
    for entry_point in entry_points:
        dist = entry_point.dist
        if dist is not None and _normalize(dist.name) != 'gocept-runner':
            return f'{prog} ({dist.name} {dist.version}, {runner})'
    return f'{prog} ({runner})'


def _normalize(name):
    return re.sub(r'[-_.]+', '-', name).lower()
