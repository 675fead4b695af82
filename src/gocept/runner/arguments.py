"""The argparse parts of a program: its parser, the options every program
shares, the types of their values, and a worker's own arguments.

A usage error is one line on stderr and exit status 2 (ArgumentParser).
``--help`` is 78 columns wide and ends with the exit statuses, made from
gocept.runner.status.STATUSES.
"""

import argparse
import math
import os
import re
import textwrap

from gocept.runner import status
from gocept.runner.interfaces import ConfigurationError


# The environment variable naming zope.conf when -C/--config is not given.
CONFIG_VARIABLE = 'GOCEPT_RUNNER_CONFIG'

EPILOG = f"""\
zope.conf is the file given by -C/--config, else the one ${CONFIG_VARIABLE}
names.  {status.describe()}"""

# The settings of a run that the options shared by every program give.
PRODUCTION_OPTIONS = ('max_ticks', 'max_runtime', 'max_memory', 'heartbeat',
                      'metrics', 'metrics_file')


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose usage error is one line."""

    def error(self, message):
        """A usage error: one line on stderr, exit status 2."""
        self.exit(status.EX_USAGE, f'{self.prog}: {message} (see --help)\n')


def make_parser(prog, description, config_required=False):
    """A parser with the options every program shares (-C/--config, -s/--site,
    --lock-file, the limits, --heartbeat, --metrics, --metrics-file,
    --debug, --version).  `config_required`: the program has no zope.conf
    of its own, so -C or $GOCEPT_RUNNER_CONFIG must name one."""
    parser = ArgumentParser(
        prog=prog, description=description, epilog=EPILOG,
        formatter_class=HelpFormatter)
    add_config_option(parser, config_required)
    add_run_options(parser)
    add_debug_option(parser)
    parser.add_argument(
        '--version', action=VersionAction, nargs=0,
        help="show the program's version and exit")
    return parser


def add_config_option(parser, config_required=False, dest='config'):
    """Add -C/--config (see make_parser), as `dest`."""
    if os.environ.get(CONFIG_VARIABLE):
        default = (f'default: ${CONFIG_VARIABLE}, which is'
                   f' {os.environ[CONFIG_VARIABLE]}')
    elif config_required:
        default = f'required unless ${CONFIG_VARIABLE} names one'
    else:
        default = (f'default: ${CONFIG_VARIABLE} if set, else the embedded'
                   ' default.conf: a FileStorage in ./var/Data.fs, the'
                   ' minimal site, log messages on stderr')
    parser.add_argument(
        '-C', '--config', type=not_empty, metavar='PATH', dest=dest,
        help=f'the zope.conf to use ({default})')


def add_run_options(parser):
    """Add the options of a run: -s/--site, --lock-file, the limits,
    --heartbeat, --metrics and --metrics-file."""
    tempfail = status.EX_TEMPFAIL
    parser.add_argument(
        '-s', '--site', type=not_empty, metavar='NAME',
        help='the item of the root folder to use as site (default: the root'
             ' folder)')
    parser.add_argument(
        '--lock-file', type=not_empty, metavar='PATH',
        help='hold this lock file for the whole run; if another run holds'
             f' it, exit at once with status {tempfail}')
    parser.add_argument(
        '--max-ticks', type=positive_int, metavar='N',
        help=f'stop after N ticks, with exit status {tempfail}')
    parser.add_argument(
        '--max-runtime', type=runtime, metavar='SECONDS',
        help='stop after the tick that ends SECONDS after the start, with'
             f' exit status {tempfail}')
    parser.add_argument(
        '--max-memory', type=size_in_bytes, metavar='SIZE',
        help='stop after the tick that leaves the resident memory at SIZE'
             ' (bytes, or with a suffix K, M or G) or more, with exit status'
             f' {tempfail}')
    parser.add_argument(
        '--heartbeat', type=not_empty, metavar='PATH',
        help='update the modification time of this file after every tick')
    parser.add_argument(
        '--metrics', type=metrics_address, metavar='[HOST:]PORT',
        help='serve Prometheus metrics over HTTP on this port of 127.0.0.1,'
             ' or of HOST (needs the metrics extra)')
    parser.add_argument(
        '--metrics-file', type=not_empty, metavar='PATH',
        help="write Prometheus metrics to this file at the run's end, for"
             " node_exporter's textfile collector (needs the metrics"
             " extra)")


def add_debug_option(parser):
    """Add --debug: show the traceback of an error."""
    parser.add_argument(
        '--debug', action='store_true',
        help='show the traceback of an error')


def add_rest(parser):
    """Add the words that are the worker's own arguments, as ``rest``."""
    parser.add_argument(
        'rest', nargs='*', metavar='ARG',
        help="the worker's own arguments, left in sys.argv[1:] (after --"
             " if one starts with -)")


def parse_with_rest(parser, argv):
    """Parse `argv`, options and words in any order; the words and all
    after the first ``--`` are ``rest`` (``after_dashes`` of them came
    after it)."""
    # parse_intermixed_args takes an option after -- for one of its own.
    after = []
    if '--' in argv:
        index = argv.index('--')
        argv, after = argv[:index], argv[index + 1:]
    args = parser.parse_intermixed_args(argv)
    args.rest += after
    args.after_dashes = len(after)
    return args


def parse_declared(parser, declare, argv):
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
    arguments, _ = parse_declared(
        ArgumentParser(prog=prog, add_help=False), declare, argv)
    return arguments


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
    return {name: getattr(args, name) for name in PRODUCTION_OPTIONS
            if getattr(args, name) is not None}


def config_variable(parser):
    """The zope.conf that $GOCEPT_RUNNER_CONFIG names, None if it is unset.

    Set but empty is a usage error of `parser`.
    """
    config = os.environ.get(CONFIG_VARIABLE)
    if config == '':
        # Set from an unset shell variable, say: not the default zope.conf.
        parser.error(f'${CONFIG_VARIABLE} is empty: name a zope.conf or unset'
                     ' it')
    return config


class HelpFormatter(argparse.HelpFormatter):
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


# The types of the options' values: each returns the value, or raises
# argparse.ArgumentTypeError, which the parser turns into a usage error.

def not_empty(value):
    """Any text but the empty one."""
    if not value:
        raise argparse.ArgumentTypeError('must not be empty')
    return value


def metrics_address(value):
    """[HOST:]PORT, as gocept.runner.metrics.address takes it."""
    # Imported here for the start-up, not for a circle: with
    # prometheus_client, it costs the import of gocept.runner 32-58 ms
    # (the least and the median of 20 runs), which only a run with metrics
    # needs to pay.
    from gocept.runner import metrics
    try:
        metrics.address(value)
    except ConfigurationError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


# The longest time in seconds an option may give.
_YEAR = 365 * 24 * 60 * 60


def seconds(value):
    """A number of seconds from 0 to a year."""
    number = _float(value)
    if not 0 <= number <= _YEAR:
        raise argparse.ArgumentTypeError(
            f'{value!r} is not a number of seconds from 0 to a year')
    return number


def runtime(value):
    """A number of seconds above 0, up to a year."""
    # Not 0: no tick would run (see gocept.runner.limits.check).
    number = seconds(value)
    if number == 0:
        raise argparse.ArgumentTypeError(
            f'{value!r} is not a number of seconds above 0, up to a year')
    return number


_DURATION = re.compile(r'(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)')
_DURATION_UNITS = {'': 1, 's': 1, 'm': 60, 'h': 3600, 'd': 86400,
                   'w': 7 * 86400}


def duration(value):
    """A time span: seconds, or a number with a unit s, m, h, d or w
    (``90``, ``15m``, ``36h``, ``30d``); from 0 to about a hundred years.
    """
    match = _DURATION.fullmatch(value.strip().lower())
    number = math.nan if match is None else (
        float(match.group(1)) * _DURATION_UNITS[match.group(2)])
    if not 0 <= number <= 100 * _YEAR:
        raise argparse.ArgumentTypeError(
            f'{value!r} is not a duration (seconds, or a number with s, m,'
            ' h, d or w)')
    return number


def _float(value):
    try:
        return float(value)
    except ValueError:
        return math.nan


def positive_int(value):
    """A whole number above 0."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(
            f'{value!r} is not a positive whole number')
    return number


_UNITS = {'': 1, 'K': 1024, 'M': 1024 ** 2, 'G': 1024 ** 3}


def size_in_bytes(value):
    """A size above 0 in bytes, or with a suffix K, M or G (any case)."""
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


class VersionAction(argparse.Action):
    """``--version``: print `version` and exit."""

    # Not argparse's "version" action: that needs the text up front, and
    # finding it costs a scan of all installed distributions.

    def __call__(self, parser, namespace, values, option_string=None):
        print(version(parser.prog))
        parser.exit()


def version(prog):
    """``prog (its distribution and version, gocept.runner's version)``."""
    # Imported here for the start-up: it costs the import of gocept.runner
    # 7-13 ms (the least and the median of 20 runs), for --version only.
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
