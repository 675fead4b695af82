"""A decorated worker run as a Unix program.

Its arguments come from the command line, the outcome is its exit status,
and an error the user can cause is one line on stderr (a traceback only
with ``--debug``): see `execute`, which the ``gocept-runner`` command
(gocept.runner.cli) uses as well.
"""

# The decorators import this module, and so every runner imports inspect
# and argparse (gocept.runner.arguments), a program or not: they cost the
# import of gocept.runner 6-20 ms and 3-8 ms (the least and the median of
# 20 runs, at a load of 5 on two cores), this module and arguments with
# them 15-30 ms of its 270-500 ms.  inspect is imported anyway once
# zope.conf is read (by ZConfig's logger formatter), and a whole runner's
# start-up did not change beyond its noise.
import inspect
import os
import sys
import traceback

from gocept.runner import signals
from gocept.runner import status
from gocept.runner.arguments import CONFIG_VARIABLE
from gocept.runner.arguments import add_rest
from gocept.runner.arguments import config_variable
from gocept.runner.arguments import make_parser
from gocept.runner.arguments import parse_declared
from gocept.runner.arguments import parse_with_rest
from gocept.runner.arguments import production_options
from gocept.runner.arguments import seconds


# The zope.conf of gocept-runner when none is given (./var/Data.fs, the
# minimal site ZCML), beside the other zope.conf files of this package.
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, 'default.conf')


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
        args = parse_with_rest(parser, sys.argv[1:])
        arguments = None
    else:
        arguments, args = parse_declared(
            parser, decorator.arguments, sys.argv[1:])
    config = args.config or config_variable(parser)
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
        make_var(config)
        return decorator.run(worker, args.site, config, arguments=arguments,
                             **overrides)

    sys.exit(execute(parser.prog, args.debug, run_worker, exiting=True))


def program_parser(decorator, worker, prog=None):
    """The argparse parser of `worker`, decorated by `decorator`, as a
    program (without the worker's declared `arguments`)."""
    parser = make_parser(prog, description(decorator, worker),
                         config_required=True)
    if not decorator.once:
        parser.add_argument(
            '--ticks', type=seconds, metavar='SECONDS',
            help=f'seconds to sleep between two ticks (default:'
                 f' {decorator.ticks:g})')
    if decorator.arguments is None:
        add_rest(parser)
    return parser


def description(decorator, worker):
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


def execute(prog, debug, work, exiting=False,
            status_of=status.exit_status):
    """Call `work`; return the exit status: `status_of` what it returned
    (a finished MainLoop), or, if it raised an Exception, the status of
    that error, which is printed as one line on stderr after `prog`
    (with its traceback before it if `debug`).

    The signals are handled from here on (see gocept.runner.signals): one
    that arrives while the worker's module is imported is not fatal either.
    `exiting`: the process exits afterwards (see
    gocept.runner.signals.handled).
    """
    try:
        with signals.handled(exiting=exiting):
            result = work()
    except Exception as error:
        if debug:
            traceback.print_exc()
        code, message = status.failure(error)
        # One line, whatever the message looks like.
        print(f'{prog}: {" ".join(message.split())}', file=sys.stderr)
        return code
    return status_of(result)


def make_var(zope_conf):
    """Make ``./var`` if `zope_conf` is one of this package's."""
    # The zope.conf files of this package keep their FileStorage in ./var,
    # which a newcomer has not made.
    if os.path.dirname(os.path.abspath(zope_conf)) == HERE:
        os.makedirs('var', exist_ok=True)
