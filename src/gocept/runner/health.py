"""Telling supervisors that the process is alive: a heartbeat file, systemd.

Both are the process's: the process is alive when every loop that has not
ended has ended a tick since the last report, so a loop that hangs stops
the reports (and a supervisor restarts the process).
"""

import logging
import os
import threading

from gocept.runner import systemd
from gocept.runner.interfaces import ConfigurationError
from gocept.runner.middleware import Middleware


log = logging.getLogger(__name__)


class Rounds:
    """Tells when every loop of a process that has not ended has ended a
    tick since the last round was complete.

    Thread-safe: the loops of a process call it from their threads.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._active = set()
        self._ticked = set()

    def begin(self, loops):
        """A round of `loops` begins: the process starts them."""
        with self._lock:
            self._active = set(loops)
            self._ticked = set()

    def started(self, loop):
        with self._lock:
            self._active.add(loop)

    def ended(self, loop):
        """Whether the end of `loop` completes the round."""
        with self._lock:
            self._active.discard(loop)
            self._ticked.discard(loop)
            return self._complete()

    def ticked(self, loop):
        """Whether `loop`'s tick completes the round."""
        if len(self._active) == 1:
            return True  # a single loop: no lock for every tick
        with self._lock:
            self._ticked.add(loop)
            return self._complete()

    def _complete(self):
        if self._active and self._ticked >= self._active:
            self._ticked.clear()
            return True
        return False


class Heartbeat(Middleware):
    """Updates the modification time of the file `path` after every round
    of ticks (see Rounds).

    A file that cannot be written when the process starts is a
    configuration error; one that fails later (its directory removed, a
    full disk) is logged once as a WARNING, and the run goes on.
    """

    def __init__(self, path):
        self.path = path
        self.failing = False
        self.rounds = Rounds()

    def before_process(self, process):
        self.rounds.begin(process.loops)
        try:
            self.touch()
        except OSError as e:
            raise ConfigurationError(
                f'Cannot write the heartbeat file {self.path}:'
                f' {e.strerror}') from None

    def before_loop(self, loop):
        self.rounds.started(loop)

    def after_tick(self, loop, tick):
        if self.rounds.ticked(loop):
            self.beat()

    def after_loop(self, loop):
        if self.rounds.ended(loop):
            self.beat()

    def beat(self):
        try:
            self.touch()
        except OSError as e:
            if not self.failing:
                log.warning('Cannot write the heartbeat file %s: %s',
                            self.path, e.strerror)
            self.failing = True
        else:
            if self.failing:
                log.info('The heartbeat file %s is written again', self.path)
            self.failing = False

    def touch(self):
        with open(self.path, 'a'):
            pass
        os.utime(self.path)


class SystemdNotify(Middleware):
    """Notifies systemd (when NOTIFY_SOCKET is set): ready when every loop
    runs, alive after every round of ticks (see Rounds), stopping."""

    def __init__(self):
        self.notify = systemd.Notifier()
        self.rounds = Rounds()
        self._started = set()
        self._lock = threading.Lock()

    def before_process(self, process):
        self.rounds.begin(process.loops)

    def before_loop(self, loop):
        if self.notify.address is None:
            return
        self.rounds.started(loop)
        with self._lock:
            ready = len(self._started) < len(loop.process.loops)
            self._started.add(loop)
            ready = ready and len(self._started) == len(loop.process.loops)
        if ready:
            self.notify('READY=1')

    def after_tick(self, loop, tick):
        if self.notify.address is not None and self.rounds.ticked(loop):
            self.notify('WATCHDOG=1')

    def after_loop(self, loop):
        if self.notify.address is not None and self.rounds.ended(loop):
            self.notify('WATCHDOG=1')

    def after_process(self, process):
        self.notify('STOPPING=1')
        self.notify.close()
