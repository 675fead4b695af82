"""Limits after which a run stops, so that a fresh process takes over."""

import logging
import numbers
import os
import resource
import sys
import threading
import time

from gocept.runner.interfaces import ConfigurationError
from gocept.runner.middleware import Middleware


log = logging.getLogger(__name__)

# The reasons to stop (MainLoop.stopped_because) that Limits gives.
LIMITS = ('max_ticks', 'max_runtime', 'max_memory')


class Limits(Middleware):
    """Stops a loop after its tick number `max_ticks`, and the process after
    the tick that reached `max_runtime` seconds since the process started or
    `max_memory` bytes of resident memory.

    No tick starts after `max_runtime`: the pause before it is cut short.
    Given to a process, the limits see the ticks of every loop.
    """

    def __init__(self, max_ticks=None, max_runtime=None, max_memory=None):
        check(dict(max_ticks=max_ticks, max_runtime=max_runtime,
                   max_memory=max_memory))
        self.max_ticks = max_ticks
        self.max_runtime = max_runtime
        self.max_memory = max_memory
        self.started = None
        # The loops of a process may reach a limit at once: one says so.
        self._stopping = threading.Lock()

    def before_process(self, process):
        self.started = time.monotonic()

    def before_loop(self, loop):
        if self.started is None:  # a loop's own limits, not a process's
            self.started = time.monotonic()

    def before_tick(self, loop):
        # The pause after the last tick ended at the deadline.
        if self._runtime_over():
            self.stop(loop, 'max_runtime', self.max_runtime)

    def after_tick(self, loop, tick):
        if not loop.running:
            return
        if self.max_ticks is not None and tick.number >= self.max_ticks:
            log.info('Worker %s reached max_ticks (%s), stopping.',
                     loop.name, tick.number)
            loop.stop('max_ticks')
        elif self._runtime_over():
            self.stop(loop, 'max_runtime', self.max_runtime)
        elif (self.max_memory is not None and
              resident_memory() >= self.max_memory):
            self.stop(loop, 'max_memory', resident_memory())
        elif self.max_runtime is not None:
            tick.pause = min(tick.pause, self.started + self.max_runtime -
                             time.monotonic())

    def _runtime_over(self):
        return (self.max_runtime is not None and
                time.monotonic() - self.started >= self.max_runtime)

    def stop(self, loop, reason, value):
        """Stop the process of `loop` (which may be a process of one) for
        `reason`."""
        process = loop.process
        if process is None or len(process.loops) == 1:
            who = f'Worker {loop.name}'
        else:
            who = 'Host'
        if process is None:
            log.info('%s reached %s (%s), stopping.', who, reason, value)
            loop.stop(reason)
            return
        with self._stopping:
            if process.stopped_because is None:
                log.info('%s reached %s (%s), stopping.', who, reason,
                         value)
            # Again if the process is stopping already: whatever the loop
            # missed of that, it stops now.
            process.stop(reason)


def check(options):
    """Raise ConfigurationError if a limit among `options` (the keyword
    arguments of MainLoop, say) is not a number above 0 (a whole one for
    max_ticks).

    With max_runtime 0 no tick would ever run: the program would end at
    once with status 75, and its supervisor would start it again, for ever.
    """
    for name, kind, valid in _KINDS:
        value = options.get(name)
        if value is not None and not valid(value):
            raise ConfigurationError(
                f'{name} must be {kind} above 0, not {value!r}')


def _positive(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return float(value) > 0
    except OverflowError:  # an int too large for a float
        return value > 0


def _positive_whole(value):
    try:
        return _positive(value) and value == int(value)
    except OverflowError:  # infinity
        return False


_KINDS = (('max_ticks', 'a whole number', _positive_whole),
          ('max_runtime', 'a number of seconds', _positive),
          ('max_memory', 'a number of bytes', _positive))


def resident_memory():
    """The resident set size of this process in bytes."""
    try:
        with open('/proc/self/statm') as f:
            pages = int(f.read().split()[1])
    except OSError:
        # No procfs (macOS, BSD): the peak is the best there is.  ru_maxrss
        # is in KiB on Linux and the BSDs, in bytes on macOS.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == 'darwin' else peak * 1024
    return pages * os.sysconf('SC_PAGE_SIZE')
