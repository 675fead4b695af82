"""What happens on a signal.

SIGTERM and SIGHUP stop every loop of the process after its running tick
has committed.  SIGINT stops them too, and aborts a worker that is running
in the main thread (as Ctrl-C would; a worker in a thread of its own runs
to the end of its tick), also one about to run: a worker called after a
SIGINT in its tick aborts as it begins (see `worker_begins`).  SIGUSR2
reopens the log files (logrotate, zdaemon's ``logreopen``).

The handlers are installed for a whole run, from reading zope.conf until
the database is closed (see `handled`).  A handler only records the signal
and wakes the loops; the loops act on it between their ticks (the
`Signals` middleware), where no log line is half written.  A signal that
arrives before the loops run is kept, and they act on it when they start:
a stop signal then means that no tick runs.  No signal is ever fatal while
the handlers are installed, so a burst of them during shut-down does not
kill the process with its database half closed.
"""

import contextlib
import logging
import signal
import threading

import ZConfig.components.logger.loghandler

from gocept.runner.middleware import Middleware


# The seed of gocept.runner pins this line to this logger (it was the main
# loop's module).
log = logging.getLogger('gocept.runner.runner')
debug = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
REOPEN_SIGNAL = signal.SIGUSR2

# The handlers that a program has not chosen itself; the run replaces them.
# Any other handler (a 3.x program's own ``mloop.stopMainLoop``, say) is the
# program's and stays.
_DEFAULTS = (signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler, None)


class Signals(Middleware):
    """The signals of one run, and what the process does on them: the
    process's first middleware (see gocept.runner.process)."""

    def __init__(self):
        self.process = None
        # A stop signal not yet acted on, one not yet logged; a request to
        # reopen the log files.
        self.pending_stop = None
        self.to_log = None
        self.reopen = False
        self._previous = {}
        self._lock = threading.Lock()

    def install(self):
        """Handle the signals whose handlers are Python's or the OS's."""
        for signum in (*STOP_SIGNALS, REOPEN_SIGNAL):
            if signal.getsignal(signum) in _DEFAULTS:
                self._previous[signum] = signal.signal(signum, self.handle)

    def restore(self, exiting=False):
        """Put back the handlers that `install` replaced; ignore those
        signals instead when the process is `exiting`."""
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_IGN if exiting else handler)
        self._previous.clear()

    def attach(self, process):
        """Send the signals to `process` from now on."""
        self.process = process

    def detach(self):
        self.process = None

    def handle(self, signum, frame):
        """The handler of the signals: record, stop, wake; nothing else."""
        process = self.process
        if signum == REOPEN_SIGNAL:
            self.reopen = True
            if process is not None:
                process.wake()
            return
        self.to_log = signum
        if process is None or not process.running:
            self.pending_stop = signum
        if process is not None:
            process.signal = signum
            process.stop('signal')
            loop = process.main_loop
            if signum == signal.SIGINT and loop is not None and (
                    loop.in_worker):
                # Like Python's own handler, but only while the worker
                # runs: a commit is never cut short.
                raise KeyboardInterrupt

    def before_process(self, process):
        if self.pending_stop is not None:
            process.signal, self.pending_stop = self.pending_stop, None
            process.stop('signal')

    def before_loop(self, loop):
        self.serve()

    def after_wakeup(self, loop):
        self.serve()

    def after_loop(self, loop):
        self.serve()

    def after_process(self, process):
        self.serve()

    def serve(self):
        """Do what the handler left to be done: log the signal received,
        reopen the log files."""
        if self.to_log is None and not self.reopen:
            return
        with self._lock:
            signum, self.to_log = self.to_log, None
            if signum is not None:
                log.info('Received signal %s, terminating.', signum)
            if self.reopen:
                self.reopen = False
                ZConfig.components.logger.loghandler.reopenFiles()
                debug.debug('Log files reopened')


def worker_begins(loop):
    """Mark the worker of `loop` as running (`in_worker`): a SIGINT now
    aborts it if the loop runs in the main thread.  One that came since its
    tick began aborts it at once, raising KeyboardInterrupt here."""
    loop.in_worker = True
    process = loop.process
    if (loop.signal == signal.SIGINT and process is not None
            and process.main_loop is loop):
        raise KeyboardInterrupt


def received(loop, signum, frame):
    """What a handler that a program installed itself does for `loop`
    (``signal.signal(signal.SIGTERM, loop.stopMainLoop)``, as 3.x programs
    do): what the process's own would do, or, if the loop does not run,
    stop it now."""
    if loop.process is not None:
        loop.process.signals.handle(signum, frame)
    else:
        loop.signal = signum
        loop.stop('signal')
        # Nothing would log it later.
        log.info('Received signal %s, terminating.', signum)


# The Signals of the run in progress in this process, if any.
_current = None


@contextlib.contextmanager
def handled(exiting=False):
    """Handle the signals while the block runs; yield the Signals.

    Nested calls (a program's around the process's own) share the outer
    one's handlers.  A program that exits when the block ends says it is
    `exiting`: the signals are then ignored from the end of the block on,
    so that one that comes while the interpreter shuts down does not turn
    the program's exit status into a death by signal.  Outside the main
    thread, where no handler can be installed, the Signals handle nothing.
    """
    global _current
    if threading.current_thread() is not threading.main_thread():
        yield Signals()
        return
    outer = _current
    if outer is None:
        _current = Signals()
        _current.install()
    current = _current
    try:
        yield current
    finally:
        if outer is None:
            current.restore(exiting)
            _current = None
