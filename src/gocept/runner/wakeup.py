"""A sleep that ends at once when it is told to, even from a signal handler.

A loop sleeps between its ticks; a stop signal must end that sleep at once,
and a signal handler may do little more than write a byte to a pipe (the
self-pipe trick).  Each MainLoop sleeps on one; the metrics server waits on
one for its stop.
"""

import os
import select


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
        if self._write is not None:
            try:
                os.write(self._write, b'.')
            except BlockingIOError:
                pass  # the pipe is full: woken already

    def sleep(self, seconds):
        """Sleep `seconds`, or until woken; return whether woken."""
        woken, _, _ = select.select([self._read], [], [], seconds)
        try:
            while os.read(self._read, 512):
                pass
        except BlockingIOError:
            pass
        return bool(woken)
