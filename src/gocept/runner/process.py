"""A process runs main loops: one in its main thread, or many in threads.

A single runner is a process of one loop, which runs in the calling thread
(the main thread of a program); a host of many workers is a process of
several, each in a thread of its own with a database connection of its own
(and so with its own transaction, site and security interaction, which are
per thread).  Either way, what belongs to the process is written once: its
signals (gocept.runner.signals) and its middleware, which sees every
loop's ticks (limits, the heartbeat and systemd, a metrics exporter).

A loop of several that fails (an error outside its ticks, which the loop
does not catch: its `before_loop` middleware's, say) is logged and started
again after a pause that doubles from RESTART_PAUSE to MAX_RESTART_PAUSE,
so that one worker's fault does not stop the others.  A single loop's
error ends the process: a supervisor starts it again.
"""

import logging
import threading

import transaction
import zope.component.hooks
import zope.security.management

from gocept.runner import retry
from gocept.runner import signals
from gocept.runner import tracing
from gocept.runner.health import Heartbeat
from gocept.runner.health import SystemdNotify
from gocept.runner.limits import Limits


log = logging.getLogger(__name__)

#: Seconds before a failed loop of several starts again, the first time.
RESTART_PAUSE = 1
#: The longest pause before a failed loop of several starts again.
MAX_RESTART_PAUSE = 60


def middleware(max_runtime=None, max_memory=None, heartbeat=None):
    """The process's middleware for these settings: its limits, heartbeat,
    systemd's notifications (when NOTIFY_SOCKET is set) and tracing (when
    OpenTelemetry is set up, see gocept.runner.tracing)."""
    result = []
    if (max_runtime, max_memory) != (None, None):
        result.append(Limits(max_runtime=max_runtime, max_memory=max_memory))
    if heartbeat is not None:
        result.append(Heartbeat(heartbeat))
    notify = SystemdNotify()
    if notify.notify.address is not None:
        # Without NOTIFY_SOCKET it has nothing to do, and no hook to call.
        result.append(notify)
    result.extend(tracing.middleware())
    return result


class Process:
    """Runs `loops` (MainLoops) with the process's `middleware`.

    After `run`, `stopped_because` is None if every loop ended by itself,
    else why the process stopped them ('signal', with `signal` saying which,
    a limit, 'stop'); each loop says why it ended.
    """

    def __init__(self, loops, middleware=()):
        self.loops = list(loops)
        self.middleware = list(middleware)
        self.signals = None
        self.signal = None
        self.stopped_because = None
        self.running = False
        # The loop that runs in the main thread, if one does.
        self.main_loop = None
        self._stopping = threading.Event()

    def run(self):
        """Run every loop until all have ended; return self."""
        self.stopped_because = self.signal = None
        self._stopping.clear()
        with signals.handled() as self.signals:
            self.signals.attach(self)
            try:
                for middleware in self.hooks():
                    middleware.before_process(self)
                self.running = True
                if len(self.loops) == 1:
                    self._run_here(self.loops[0])
                else:
                    self._run_in_threads()
            finally:
                self.running = False
                self.signals.detach()
                self._after_process()
        return self

    def hooks(self):
        """The middleware of the process, its Signals first."""
        return [self.signals, *self.middleware]

    def stop(self, reason='stop'):
        """Stop every loop after its running tick (safe in a signal
        handler).  `reason` becomes `stopped_because` unless the process
        is stopping for another reason already."""
        if self.stopped_because is None:
            self.stopped_because = reason
        self._stopping.set()
        for loop in self.loops:
            if self.signal is not None:
                loop.signal = self.signal
            loop.stop(self.stopped_because)

    def wake(self):
        """Wake every loop that sleeps between two ticks."""
        for loop in self.loops:
            loop.wake()

    def _run_here(self, loop):
        is_main = threading.current_thread() is threading.main_thread()
        self.main_loop = loop if is_main else None
        loop.process = self
        try:
            loop()
        finally:
            loop.process = self.main_loop = None

    def _run_in_threads(self):
        db = self.loops[0].app._p_jar.db()
        # A connection for every loop, and the one of the main thread,
        # without ZODB's warning about a pool too small.
        db.setPoolSize(max(db.getPoolSize(), len(self.loops) + 1))
        threads = [
            threading.Thread(target=self._run_in_thread, args=(loop, db),
                             name=f'gocept.runner {loop.name}')
            for loop in self.loops]
        for thread in threads:
            thread.start()
        try:
            # The main thread only waits: signals are handled in it, and
            # it goes on as soon as the last loop has ended.
            for thread in threads:
                thread.join()
        finally:
            if any(thread.is_alive() for thread in threads):
                self.stop()  # the main thread itself failed
                for thread in threads:
                    thread.join()

    def _run_in_thread(self, loop, db):
        """The body of the thread of `loop`: run it on its app in a
        connection of its own; start it again after an error."""
        oid = loop.app._p_oid
        pauses = retry.Backoff(RESTART_PAUSE, MAX_RESTART_PAUSE)
        loop.process = self
        while not self._stopping.is_set():
            connection = db.open()
            try:
                loop.app = connection.get(oid)
                loop()
                break
            except Exception:
                pause = next(pauses)
                log.exception('Worker %s failed; starting it again in %s'
                              ' seconds', loop.name, pause)
            finally:
                _clean_up(connection)
            self._stopping.wait(pause)
        loop.process = None

    def _after_process(self):
        for middleware in self.hooks():
            try:
                middleware.after_process(self)
            except Exception:
                log.exception('Error in after_process of %r', middleware)


def _clean_up(connection):
    """Leave the thread as it was before the loop: no transaction, site or
    interaction; the connection closed."""
    try:
        transaction.abort()
    except Exception:
        log.debug('Cannot abort at the end of a loop', exc_info=True)
    zope.component.hooks.setSite(None)
    zope.security.management.endInteraction()
    connection.close()
