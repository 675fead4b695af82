"""What happens when a worker forks and its child comes back to the loop.

The child shares the parent's storage, lock and log files: closing them,
or committing, would harm the parent's run.  So a child that returns from
the worker, or raises out of it, ends there, at once.
"""

import logging
import os
import sys
import traceback


# How many forks lie between this process and the one that imported this
# module: a worker that forked is in its child if this changed while it ran.
# os.fork() runs the hook (and so must a C extension that forks:
# PyOS_AfterFork_Child); os.getpid(), a system call, cost each tick 0.5 µs.
generation = 0


def _forked():
    global generation
    generation += 1


os.register_at_fork(after_in_child=_forked)


def end_child(error):
    """End a forked child that left the worker: with the status of its
    SystemExit, 1 after another `error`, 0 after a return (`error` None).
    """
    status = 0
    if isinstance(error, SystemExit):
        status = error.code
        if status is not None and not isinstance(status, int):
            print(status, file=sys.stderr)
            status = 1
    elif error is not None:
        traceback.print_exception(error)
        status = 1
    for stream in sys.stdout, sys.stderr:
        try:
            stream.flush()
        except Exception:
            pass
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(status or 0)
