"""The ``gocept-jobs`` command: run workers, and look at and mend the jobs
of a database.

    gocept-jobs [-C zope.conf] COMMAND [-C zope.conf] ...

    gocept-jobs work [--workers N] [--import MODULE] [--burst] [the options
                     of a run]
    gocept-jobs list [--pending | --delayed | --running | --done | --failed]
    gocept-jobs show ID
    gocept-jobs retry ID... | --failed
    gocept-jobs purge --failed [--older-than DURATION] | --schedule NAME
    gocept-jobs schedules

Each takes -C zope.conf as the other programs do.  What it prints is for
people and for ``grep``/``awk`` alike: one job per line, the same columns
whatever the terminal, times in the machine's time zone with its offset.
A job id that names no job kept (or a job in a state the command cannot
change) is one line on stderr and exit status 1, and nothing is changed.
"""

import datetime
import os
import sys
import time

import transaction
from ZODB.utils import oid_repr

from gocept.runner import assembly
from gocept.runner import config as config_
from gocept.runner import environment
from gocept.runner import retry
from gocept.runner import status
from gocept.runner.arguments import ArgumentParser
from gocept.runner.arguments import HelpFormatter
from gocept.runner.arguments import VersionAction
from gocept.runner.arguments import add_config_option
from gocept.runner.arguments import add_debug_option
from gocept.runner.arguments import add_run_options
from gocept.runner.arguments import config_variable
from gocept.runner.arguments import duration
from gocept.runner.arguments import positive_int
from gocept.runner.arguments import production_options
from gocept.runner.jobs import record
from gocept.runner.jobs import scheduler
from gocept.runner.jobs import store
from gocept.runner.jobs.worker import workers
from gocept.runner.programs import DEFAULT_CONFIG
from gocept.runner.programs import execute
from gocept.runner.programs import make_var


#: The states `list` selects by, in the order of its options.
STATES = ('pending', 'delayed', 'running', 'done', 'failed')
#: Jobs retried or purged in one transaction, at most.
BATCH = store.EXPIRE_BATCH

EPILOG = f"""\
Exit status: {status.EX_OK} when done (for work: also when stopped by
SIGTERM or SIGHUP), {status.EX_FAILURE} for a job id that names no job kept
or a job that is not failed (nothing is changed then) and when the command
failed (when the database cannot be reached, say), {status.EX_USAGE} for a
usage or configuration error, {status.EX_TEMPFAIL} when another process
holds the lock file, and when work reached its max_ticks, max_runtime or
max_memory (restart it)."""


def script(prog='gocept-jobs'):
    """The ``gocept-jobs`` console script: `main`, then exit."""
    sys.exit(main(prog=prog, exiting=True))


def main(argv=None, prog='gocept-jobs', exiting=False):
    """The ``gocept-jobs`` command; return the exit status.  `exiting`:
    the process exits afterwards (see gocept.runner.signals.handled)."""
    parser = make_parser(prog)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    subparser = args.parser
    config = (args.config or args.config_before or config_variable(subparser)
              or DEFAULT_CONFIG)
    if args.command == 'retry' and bool(args.ids) == args.failed:
        subparser.error('give the ids of failed jobs, or --failed')
    if args.command == 'purge' and args.schedule and args.older_than:
        subparser.error('--older-than is for --failed, not --schedule')
    if args.command == 'work':
        return execute(subparser.prog, args.debug,
                       lambda: work(args, config), exiting,
                       status_of=status.process_status)
    command = COMMANDS[args.command]
    return execute(subparser.prog, args.debug,
                   lambda: on_jobs(config, command, args), exiting,
                   status_of=lambda code: code)


def make_parser(prog='gocept-jobs'):
    """The argparse parser of the ``gocept-jobs`` command."""
    parser = ArgumentParser(
        prog=prog, epilog=EPILOG, formatter_class=HelpFormatter,
        description='Run the workers that take the jobs of a ZODB database'
                    ' (see gocept.runner.jobs), or look at its jobs and'
                    ' retry or purge failed ones.')
    # Before the command or after it: a command's own default would
    # overwrite the value of an option of the same name given before it.
    add_config_option(parser, dest='config_before')
    parser.add_argument(
        '--version', action=VersionAction, nargs=0,
        help="show the program's version and exit")
    commands = parser.add_subparsers(
        dest='command', metavar='COMMAND', required=True)

    def command(name, help, usage=None):
        subparser = commands.add_parser(
            name, help=help, description=help[0].upper() + help[1:] + '.',
            epilog=EPILOG, formatter_class=HelpFormatter, usage=usage)
        add_config_option(subparser)
        add_debug_option(subparser)
        subparser.set_defaults(parser=subparser)
        return subparser

    work = command('work', 'take jobs and run them until stopped')
    add_run_options(work)
    work.add_argument(
        '--workers', type=positive_int, default=1, metavar='N',
        help='run N workers in this process, each in a thread of its own'
             ' (default: 1)')
    work.add_argument(
        '--import', dest='modules', action='append', default=[],
        metavar='MODULE',
        help='import MODULE, whose job functions are to run (as well as the'
             ' modules of <product-config gocept.runner.jobs> in zope.conf);'
             ' may be given more than once')
    work.add_argument(
        '--burst', action='store_true',
        help='stop when no job is pending, delayed or running')

    listing = command(
        'list', 'list the jobs kept: one line each: its id, status,'
                ' attempts, time, name and last error',
        # argparse would not break the line of the states.
        usage='%(prog)s [-h] [-C PATH] [--debug]\n    '
              f'[{" | ".join(f"--{state}" for state in STATES)}]')
    states = listing.add_mutually_exclusive_group()
    for state in STATES:
        states.add_argument(
            f'--{state}', dest='state', action='store_const', const=state,
            help=f'only the {state} jobs')

    show = command('show', 'show a job: its arguments, times, result and'
                           ' every attempt, with its traceback')
    show.add_argument('id', metavar='ID', help='the id of the job')

    retry_ = command('retry', 'queue failed jobs again, due now, with all'
                              ' their retries before them')
    retry_.add_argument('ids', nargs='*', metavar='ID',
                        help='the id of a failed job')
    retry_.add_argument('--failed', action='store_true',
                        help='every failed job')

    purge = command('purge', 'remove failed jobs, or the record of a'
                             ' schedule no longer kept, for good')
    what = purge.add_mutually_exclusive_group(required=True)
    what.add_argument('--failed', action='store_true',
                      help='the failed jobs')
    what.add_argument('--schedule', metavar='NAME',
                      help='the record of the schedule NAME (as schedules'
                           ' lists it), which <schedules> of zope.conf no'
                           ' longer names')
    purge.add_argument(
        '--older-than', type=duration, metavar='DURATION',
        help='only the failed jobs whose last attempt ended longer ago than'
             ' DURATION (seconds, or a number with s, m, h, d or w: 30d)')

    command('schedules', 'list the schedules: one line each: its last'
                         ' occurrence run, the status of its job, its next'
                         ' occurrence, its name and schedule')
    return parser


def work(args, config):
    """Run the workers `args` asks for; return their Process."""
    settings = production_options(args)
    process = {name: settings.pop(name) for name in
               assembly.PROCESS_SETTINGS if name in settings}
    if args.lock_file is not None:
        process['lock_file'] = args.lock_file
    loops = workers(args.workers, burst=args.burst, modules=args.modules,
                    site_name=args.site, **settings)
    # As gocept-runner finds MODULE:FUNCTION: a module in the current
    # directory is found (a console script's sys.path does not have it).
    if args.modules and os.getcwd() not in sys.path and '' not in sys.path:
        sys.path.insert(0, os.getcwd())
    make_var(config)
    return assembly.run(loops, environment.application(config), **process)


def on_jobs(config, command, args):
    """Call ``command(jobs, args)`` with the Jobs container of the
    database of `config` (None if it has none); return its exit status."""
    make_var(config)
    with environment.application(config) as root:
        transaction.begin()
        try:
            return command(lambda: store.jobs_of(root._p_jar), args)
        finally:
            transaction.abort()


def list_jobs(jobs_of, args):
    """``list``: print a line for each job kept (of the state asked for),
    oldest first."""
    jobs = jobs_of()
    if jobs is None:
        return status.EX_OK
    now = time.time()
    selected = [(job, job.status(now)) for job in jobs.records()]
    if args.state is not None:
        selected = [(job, state) for job, state in selected
                    if state == args.state]
    selected.sort(key=lambda pair: (when(*pair), pair[0].id))
    for job, state in selected:
        line = (f'{job.id}  {state:<8} {len(job.attempts):>3}  '
                f'{timestamp(when(job, state))}  {job.name}')
        if state == record.FAILED and job.attempts:
            line += f'  {" ".join(str(job.attempts[-1].error).split())}'
        print(line)
    return status.EX_OK


def show_job(jobs_of, args):
    """``show``: print what the record of a job keeps."""
    jobs = jobs_of()
    job = None if jobs is None else jobs.get(args.id)
    if job is None:
        return unknown(args, args.id)
    state = job.status(time.time())
    limit = 'none' if job.time_limit is None else f'{job.time_limit:g} s'
    lines = [
        f'Job {job.id}',
        f'Name: {job.name}',
        f'Status: {state}',
        f'Arguments: {describe_args(job.args, job.kwargs)}',
        f'Principal: {job.principal or "none"}',
        f'Put: {timestamp(job.created)}',
        f'Due: {timestamp(job.eta)}',
        f'Attempts: {len(job.attempts)}; failed, counted against its'
        f' {job.retries} retries: {job.tries}',
        f'Retry pause: {job.retry_pause:g} s, doubling; time limit: {limit}',
    ]
    if state == record.DONE:
        lines.append(f'Result: {describe(job.result)}')
    for attempt in job.attempts:
        ended = ('running' if attempt.ended is None else
                 f'{attempt.outcome} at {timestamp(attempt.ended)}')
        lines.append(f'Attempt {attempt.number}: by {attempt.worker},'
                     f' started at {timestamp(attempt.started)}, {ended}')
        if attempt.transaction:
            lines.append(f'  taken in transaction {attempt.transaction}')
        if attempt.error:
            lines.append(f'  {attempt.error}')
        if attempt.traceback:
            lines.extend(f'  {line}'
                         for line in attempt.traceback.rstrip().splitlines())
    print('\n'.join(lines))
    return status.EX_OK


def retry_jobs(jobs_of, args):
    """``retry``: queue the failed jobs named (or all) again, due now."""
    def select(jobs):
        if args.failed:
            return [job.id for job in jobs.failed()]
        return args.ids
    return _change(jobs_of, args, select, 'retried',
                   lambda jobs, job: jobs.retry(job, time.time()))


def purge_jobs(jobs_of, args):
    """``purge``: remove the failed jobs (older than asked) for good."""
    if args.schedule is not None:
        return purge_schedule(jobs_of, args)

    def select(jobs):
        before = time.time() - (args.older_than or 0)
        return [job.id for job in jobs.failed()
                if args.older_than is None or (job.ended or 0) < before]
    return _change(jobs_of, args, select, 'purged',
                   lambda jobs, job: jobs.purge(job))


def _change(jobs_of, args, select, done, change):
    """Apply ``change(jobs, job)`` to each failed job whose id
    ``select(jobs)`` gives, BATCH to a transaction; print how many were
    `done`.  Ids that name no failed job change nothing."""
    jobs = jobs_of()
    ids = [] if jobs is None else select(jobs)
    for job_id in dict.fromkeys(ids):
        job = None if jobs is None else jobs.get(job_id)
        if job is None:
            return unknown(args, job_id)
        if job.state != record.FAILED:
            print(f'{args.parser.prog}: job {job.describe()} is'
                  f' {job.status(time.time())}, not failed', file=sys.stderr)
            return status.EX_FAILURE
    ids = list(dict.fromkeys(ids))
    count = 0
    for start in range(0, len(ids), BATCH):
        batch = ids[start:start + BATCH]

        def apply():
            changed = 0
            current = jobs_of()
            for job_id in batch:
                job = current.get(job_id)
                # A worker may not change a failed job; another gocept-jobs
                # may have got there first.
                if job is not None and job.state == record.FAILED:
                    change(current, job)
                    changed += 1
            transaction.get().note(
                f'gocept-jobs {args.command}: {counted(changed)}')
            return changed
        changed, _ = retry.run(apply, begin=transaction.begin)
        count += changed
    print(f'{done} {counted(count)}')
    return status.EX_OK


def purge_schedule(jobs_of, args):
    """``purge --schedule``: remove the record of a schedule that
    zope.conf no longer names."""
    name = args.schedule
    if any(entry.name == name for entry in
           scheduler.configured(config_.schedules())):
        print(f'{args.parser.prog}: schedule {name} is in <schedules> of'
              ' zope.conf: remove it there first', file=sys.stderr)
        return status.EX_FAILURE
    jobs = jobs_of()
    if jobs is None or name not in jobs.schedules():
        print(f'{args.parser.prog}: no schedule {name}', file=sys.stderr)
        return status.EX_FAILURE

    def purge():
        current = jobs_of()
        if name in current.schedules():
            current.purge_schedule(name)
        transaction.get().note(f'gocept-jobs purge: schedule {name}')
    retry.run(purge, begin=transaction.begin)
    print(f'purged schedule {name}')
    return status.EX_OK


def list_schedules(jobs_of, args):
    """``schedules``: print a line for each schedule that zope.conf names
    or the database has a record of, by name."""
    entries = {entry.name: entry for entry in
               scheduler.configured(config_.schedules())}
    jobs = jobs_of()
    records = {} if jobs is None else jobs.schedules()
    now = time.time()
    for name in sorted(set(entries) | set(records)):
        entry, schedule = entries.get(name), records.get(name)
        last = outcome = None
        if schedule is not None and schedule.occurrence is not None:
            last = schedule.occurrence
            job = jobs.get(schedule.job_id)
            outcome = (job.status(now) if job is not None
                       else schedule.outcome.outcome)
        if entry is None:
            following = 'stopped'
        elif schedule is None:
            following = timestamp(entry.schedule.after(now))
        else:
            following = timestamp(entry.next(schedule.last))
        width = len(timestamp(now))
        last = '-' if last is None else timestamp(last)
        print(f'{last:<{width}}  {outcome or "-":<8} {following:<{width}}'
              f'  {name}  {"-" if entry is None else entry.schedule}')
    return status.EX_OK


COMMANDS = {
    'list': list_jobs,
    'show': show_job,
    'retry': retry_jobs,
    'purge': purge_jobs,
    'schedules': list_schedules,
}


def counted(count):
    return f'{count} failed job{"" if count == 1 else "s"}'


def unknown(args, job_id):
    print(f'{args.parser.prog}: no job {job_id} (unknown, or no longer kept)',
          file=sys.stderr)
    return status.EX_FAILURE


def when(job, state):
    """The time that matters to a job in `state`: when it is due, when its
    attempt started, or when it ended."""
    if state in ('pending', 'delayed'):
        return job.eta
    if state == record.RUNNING and job.attempts:
        return job.attempts[-1].started
    return job.ended or job.created


def timestamp(seconds):
    """`seconds` since the epoch in the machine's time zone, with its
    offset: ``2026-12-07 09:30:00+0100``."""
    return datetime.datetime.fromtimestamp(seconds).astimezone().strftime(
        '%Y-%m-%d %H:%M:%S%z')


def describe_args(args, kwargs):
    """A job's arguments as a call gives them: ``1, 'a', force=True``."""
    return ', '.join(
        [describe(value) for value in args] +
        [f'{name}={describe(value)}' for name, value in kwargs.items()]
    ) or 'none'


def describe(value):
    """`value` for a person to read: a persistent object by its class and
    oid (its repr would name its address), containers by their items."""
    oid = getattr(value, '_p_oid', None)
    if oid is not None:
        cls = type(value)
        return f'<{cls.__module__}.{cls.__qualname__} oid {oid_repr(oid)}>'
    if isinstance(value, (list, tuple)):
        items = ', '.join(describe(item) for item in value)
        if isinstance(value, tuple):
            return f'({items}{"," if len(value) == 1 else ""})'
        return f'[{items}]'
    if isinstance(value, dict):
        return '{' + ', '.join(f'{describe(key)}: {describe(item)}'
                               for key, item in value.items()) + '}'
    return repr(value)
