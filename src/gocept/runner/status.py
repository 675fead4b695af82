"""Exit statuses: how a program tells its supervisor how the run went.

STATUSES is the one table of them: ``--help`` says them from it
(`describe`), the reference page's table is made from it (the Sphinx
extension docs/exitstatuses.py), and a test checks what the documentation
says of exit statuses against it (tests/test_exit_status_docs.py).
"""

import signal

import transaction.interfaces

from gocept.runner.filestorage import disk_full
from gocept.runner.interfaces import AlreadyRunning
from gocept.runner.interfaces import ConfigurationError
from gocept.runner.limits import LIMITS
from gocept.runner.outage import unavailable


#: Done, or stopped by a signal to stop.
EX_OK = 0
#: A single run failed, or the program did before its main loop.
EX_FAILURE = 1
#: A usage or configuration error: a person must fix it (argparse's).
EX_USAGE = 2
#: Try again later (sysexits.h's EX_TEMPFAIL): a supervisor restarts it.
EX_TEMPFAIL = 75
#: SIGINT stopped a single run, as a shell reports it.
EX_INTERRUPTED = 128 + signal.SIGINT

#: Each status and what it means, in the words of ``--help``: ``(status,
#: text)``, where the status None is the worker's own SystemExit code.
STATUSES = (
    (EX_OK, 'when done (or stopped by SIGTERM or SIGHUP)'),
    (None, "the worker's own SystemExit code"),
    (EX_FAILURE, 'when a single run failed or the program failed before its'
                 ' main loop'),
    (EX_USAGE, 'for a usage or configuration error'),
    (EX_TEMPFAIL, 'when another process holds the lock file or the'
                  ' database, or when the loop reached its max_ticks,'
                  ' max_runtime or max_memory (restart it)'),
    (EX_INTERRUPTED, 'when SIGINT (Ctrl-C) stopped a single run before it'
                     ' committed'),
)


def describe():
    """The exit statuses as a sentence (for ``--help``)."""
    parts = [text if status is None else f'{status} {text}'
             for status, text in STATUSES]
    return f'Exit status: {", ".join(parts[:-1])}, {parts[-1]}.'


def exit_status(loop):
    """The exit status of a program whose MainLoop `loop` has finished."""
    if loop.exit_code is not None:
        return loop.exit_code
    if loop.stopped_because in LIMITS:
        return EX_TEMPFAIL
    if (loop.once and not loop.committed and
            loop.stopped_because in ('signal', 'KeyboardInterrupt') and
            loop.signal in (None, signal.SIGINT)):
        # Ctrl-C stopped a job before it was done, as a shell reports it.
        return EX_INTERRUPTED
    if loop.once and (loop.failed or loop.items_failed):
        return EX_FAILURE
    return EX_OK


def process_status(process):
    """The exit status of a program whose Process (or Host) has finished:
    75 if it reached a limit, else the first of its loops' that is not 0.
    """
    if process.stopped_because in LIMITS:
        return EX_TEMPFAIL
    loops = getattr(process, 'loops', None)
    if loops is None:  # a Host
        loops = [w.loop for w in process.workers if w.loop is not None]
    statuses = [exit_status(loop) for loop in loops]
    return next((status for status in statuses if status), EX_OK)


def failure(error):
    """The exit status and the message for `error`, which ended the
    program before or outside its loops."""
    if isinstance(error, AlreadyRunning):
        return EX_TEMPFAIL, str(error)
    if isinstance(error, ConfigurationError):
        if transient(error.__cause__):
            # Not 2: nothing in the configuration is to be fixed, and a
            # supervisor should try again.
            return EX_FAILURE, str(error)
        return EX_USAGE, str(error)
    return EX_FAILURE, f'{type(error).__name__}: {error}'


def transient(error):
    """Whether `error` is a condition that may pass: a storage server that
    is down (ZEO's ClientDisconnected, a PostgreSQL server out of reach), a
    full disk."""
    return (isinstance(error, transaction.interfaces.TransientError) or
            disk_full(error) or unavailable(error))
