"""The ``gocept-runner`` command: run MODULE:FUNCTION as a program.

A decorated worker installed as a console script is a program of its own
(gocept.runner.programs); the options both share and their types are in
gocept.runner.arguments, the exit statuses in gocept.runner.status.
"""

import importlib
import os
import re
import sys

from gocept.runner import assembly
from gocept.runner import host
from gocept.runner import status
from gocept.runner.arguments import CONFIG_VARIABLE
from gocept.runner.arguments import ArgumentParser
from gocept.runner.arguments import add_rest
from gocept.runner.arguments import config_variable
from gocept.runner.arguments import loop_options
from gocept.runner.arguments import make_parser
from gocept.runner.arguments import not_empty
from gocept.runner.arguments import parse_arguments
from gocept.runner.arguments import parse_declared
from gocept.runner.arguments import parse_with_rest
from gocept.runner.arguments import production_options
from gocept.runner.arguments import seconds
from gocept.runner.config import ConfigurationError
from gocept.runner.programs import DEFAULT_CONFIG
from gocept.runner.programs import execute
from gocept.runner.programs import make_var
from gocept.runner.programs import program
from gocept.runner.programs import program_parser
from gocept.runner.status import EX_FAILURE
from gocept.runner.status import EX_INTERRUPTED
from gocept.runner.status import EX_OK
from gocept.runner.status import EX_TEMPFAIL
from gocept.runner.status import EX_USAGE
from gocept.runner.status import exit_status


__all__ = [
    # The command.
    'main', 'main_parser', 'resolve', 'script',
    # Kept importable from here, where the code, tests and documents of
    # 4.0's pre-releases import them: a decorated worker as a program
    # (gocept.runner.programs), the environment variable, a worker's own
    # arguments and the settings that options give (gocept.runner.arguments),
    # the exit statuses (gocept.runner.status).
    'program', 'program_parser',
    'CONFIG_VARIABLE', 'parse_arguments', 'loop_options',
    'production_options',
    'EX_OK', 'EX_FAILURE', 'EX_USAGE', 'EX_TEMPFAIL', 'EX_INTERRUPTED',
    'exit_status',
]


# A word of the command line that names a worker.
WORKER_NAME = re.compile(r'[A-Za-z_][\w.]*:[A-Za-z_][\w.]*')


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
    args = parse_with_rest(
        parser, sys.argv[1:] if argv is None else list(argv))
    config = args.config or config_variable(parser) or DEFAULT_CONFIG
    functions = [args.function]
    while (len(args.rest) > args.after_dashes and
           WORKER_NAME.fullmatch(args.rest[0])):
        functions.append(args.rest.pop(0))
    if len(functions) > 1:
        if args.rest:
            parser.error(
                f'{args.rest[0]!r}: several workers take no arguments of'
                ' their own')
        return execute(parser.prog, args.debug,
                       lambda: _run_host(args, functions, config), exiting,
                       status_of=status.process_status)

    def run_function():
        worker = resolve(args.function)
        decorator = getattr(worker, 'decorator', None)
        arguments = None
        if decorator is not None and decorator.arguments is not None:
            arguments, _ = parse_declared(
                ArgumentParser(prog=f'{parser.prog} {args.function}',
                               add_help=False),
                decorator.arguments, args.rest)
        elif argv is None:
            sys.argv[1:] = args.rest
        make_var(config)
        options = loop_options(args)
        if decorator is not None:
            return decorator.run(worker.__wrapped__, args.site, config,
                                 arguments=arguments, **options)
        return assembly.run_worker(worker, args.site, config, **options)

    return execute(parser.prog, args.debug, run_function, exiting)


def main_parser(prog='gocept-runner'):
    """The argparse parser of the ``gocept-runner`` command."""
    parser = make_parser(
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
    add_rest(parser)
    parser.add_argument(
        '--ticks', type=seconds, metavar='SECONDS',
        help="seconds to sleep between two ticks (default: a decorated"
             " worker's, else 1)")
    parser.add_argument(
        '--once', action='store_true', default=None,
        help='run a single tick (for cron); its failure is exit status'
             f' {EX_FAILURE}')
    parser.add_argument(
        '--principal', type=not_empty, metavar='ID',
        help='run each tick in a security interaction of this principal')
    return parser


def _run_host(args, functions, config):
    """Run the workers `functions` names in one process; return the Host.
    """
    options = loop_options(args)
    process = {name: options.pop(name) for name in
               assembly.PROCESS_SETTINGS if name in options}
    workers = [host.Worker(resolve(name), site_name=args.site, **options)
               for name in functions]
    make_var(config)
    return host.Host(workers, **process).run(config)


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
