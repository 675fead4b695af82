"""A sleep that ends at once when it is told to, even from a signal handler.

A loop sleeps between its ticks; a stop signal must end that sleep at once,
and a signal handler may do little more than write a byte to a pipe (the
self-pipe trick).  Each MainLoop sleeps on one (`Sleep`); the metrics server
waits on one for its stop.
"""

import os
import select
import time


class Wakeup:
    """A pipe to sleep on (`sleep`) and to wake the sleeper with (`wake`).

    It works between `open` and `close`; `wake` before or after does
    nothing.
    """

    def __init__(self):
        self._read = self._write = None

    @property
    def is_open(self):
        return self._write is not None

    def open(self):
        self._read, self._write = os.pipe()
        for fd in self._read, self._write:
            os.set_blocking(fd, False)

    def close(self):
        os.close(self._read)
        os.close(self._write)
        self._read = self._write = None

    def fileno(self):
        """The end of the pipe to wait on (with select or selectors) while
        it is open."""
        return self._read

    def wake(self):
        """End the sleep that runs now, or the next one, at once (safe in
        a signal handler)."""
        fd = self._write  # once: another thread may close the pipe
        if fd is not None:
            try:
                os.write(fd, b'.')
            except BlockingIOError:
                pass  # the pipe is full: woken already
            except OSError:
                pass  # closed meanwhile: nothing sleeps on it

    def sleep(self, seconds):
        """Sleep `seconds`, or until woken; return whether woken.

        A wake is never lost: it is either seen by this sleep (its byte
        read) or left for the next, even one that comes between the end of
        the wait and the read.
        """
        select.select([self._read], [], [], seconds)
        woken = False
        try:
            while os.read(self._read, 512):
                woken = True
        except BlockingIOError:
            pass
        return woken


class Sleep:
    """The sleep of a loop between two ticks, on a Wakeup of its own.

    It ends at once when told to tick now (`tick_now`), or when the loop no
    longer runs; else it goes on after each waking (`wake`: a log file to
    reopen, say), which the `after_wakeup` it is given sees to first.
    """

    def __init__(self):
        self.pipe = Wakeup()
        # Whether woken since the loop last slept; whether the next (or the
        # running) sleep is to end at once.
        self.woken = self.now = False

    def open(self):
        self.woken = self.now = False
        self.pipe.open()

    def close(self):
        self.pipe.close()

    def sleep(self, seconds, running, after_wakeup):
        """Sleep `seconds` while `running()`, calling `after_wakeup()` each
        time the sleep is woken but not ended."""
        deadline = time.monotonic() + seconds
        self.woken = False
        while running() and not self.now:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # select() takes no timeout longer than about 9e9 seconds.
            if self.pipe.sleep(min(remaining, 3600)):
                after_wakeup()
        # Told before this, the next tick's new transaction sees what
        # caused it.
        self.now = False

    def no_sleep(self, after_wakeup):
        """Where no sleep follows a tick (ticks=0): call `after_wakeup()` if
        the loop was woken while it ticked."""
        if self.woken:
            self.woken = False
            self.pipe.sleep(0)
            after_wakeup()

    def wake(self):
        """Have `after_wakeup` called in the running sleep, or the next
        (safe in a signal handler)."""
        self.woken = True
        self.pipe.wake()

    def tick_now(self):
        """End the running sleep, or the next, at once (safe in a signal
        handler and from other threads)."""
        self.now = True
        self.pipe.wake()
