"""What happens on a signal.

SIGTERM and SIGHUP stop the main loop after the running tick has committed;
SIGINT stops it too, and aborts a worker that is running (as Ctrl-C would);
SIGUSR2 asks to reopen the log files (logrotate, zdaemon's ``logreopen``).

The handlers are installed for a whole run, from reading zope.conf until the
database is closed (see `handled`).  A signal that arrives before the loop
runs is kept, and the loop acts on it when it starts: a stop signal then
means that no tick runs.  No signal is ever fatal while the handlers are
installed, so a burst of them during shut-down does not kill the process
with its database half closed.
"""

import contextlib
import signal
import threading


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
REOPEN_SIGNAL = signal.SIGUSR2

# The handlers that a program has not chosen itself; the run replaces them.
# Any other handler (a 3.x program's own ``mloop.stopMainLoop``, say) is the
# program's and stays.
_DEFAULTS = (signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler, None)


class Signals:
    """The signals that arrived during one run, passed on to its loop."""

    def __init__(self):
        self.loop = None
        # A stop signal and a reopen request that no loop has handled yet.
        self.pending_stop = None
        self.pending_reopen = False
        self._previous = {}

    def install(self):
        """Handle the signals whose handlers are Python's or the OS's."""
        for signum in (*STOP_SIGNALS, REOPEN_SIGNAL):
            if signal.getsignal(signum) in _DEFAULTS:
                self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self, exiting=False):
        """Put back the handlers that `install` replaced; ignore those
        signals instead when the process is `exiting`."""
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_IGN if exiting else handler)
        self._previous.clear()

    def attach(self, loop):
        """Send the signals to `loop`, starting with those that came before.
        """
        self.loop = loop
        if self.pending_reopen:
            self.pending_reopen = False
            loop.reopen_logs()
        if self.pending_stop is not None:
            signum, self.pending_stop = self.pending_stop, None
            loop.stopMainLoop(signum, None)

    def detach(self):
        self.loop = None

    def _handle(self, signum, frame):
        loop = self.loop
        if signum == REOPEN_SIGNAL:
            if loop is None:
                self.pending_reopen = True
            else:
                loop.reopen_logs()
        elif loop is None:
            self.pending_stop = signum
        else:
            loop.stopMainLoop(signum, frame)


# The Signals of the run in progress in this process, if any.
_current = None


@contextlib.contextmanager
def handled(loop=None, exiting=False):
    """Handle the signals while the block runs; yield the Signals.

    Nested calls (the decorators' around the loop's own) share the outer
    one's handlers.  With a `loop`, the signals go to it from now on, and
    it is detached again at the end of the block.  A program that exits
    when the block ends says it is `exiting`: the signals are then ignored
    from the end of the block on, so that one that comes while the
    interpreter shuts down does not turn the program's exit status into a
    death by signal.
    """
    global _current
    if threading.current_thread() is not threading.main_thread():
        # Signals go to the main thread, and to the run there.
        yield Signals()
        return
    outer = _current
    if outer is None:
        _current = Signals()
        _current.install()
    current = _current
    try:
        if loop is not None:
            current.attach(loop)
        try:
            yield current
        finally:
            if loop is not None:
                current.detach()
    finally:
        if outer is None:
            current.restore(exiting)
            _current = None
