"""Time limits: a job that runs too long is interrupted in its thread.

A watchdog thread (there while any thread is limited) keeps the deadlines
of the threads that run limited code, and raises TimeLimitExceeded in a
thread whose deadline has passed, asynchronously (with CPython's
PyThreadState_SetAsyncExc, as dramatiq's TimeLimit middleware does).  That
works in the main thread and in any other, but only between two bytecodes:
a thread blocked in C (a long ``time.sleep``, a socket read, a lock) is
interrupted when it returns to Python.
"""

import contextlib
import ctypes
import logging
import threading
import time


log = logging.getLogger(__name__)

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


class TimeLimitExceeded(BaseException):
    """Raised in a job that ran past its time limit.

    Not an Exception: a job's own ``except Exception`` does not catch it.
    A job that catches it all the same is held to have exceeded its limit.
    """


class _Limit:

    def __init__(self, seconds):
        self.seconds = seconds
        self.thread = threading.get_ident()
        self.deadline = time.monotonic() + seconds
        self.fired = False


class _Watchdog:
    """The thread that interrupts threads past their deadlines."""

    def __init__(self):
        self._condition = threading.Condition()
        # Thread ident -> its _Limit, while it runs limited code.
        self._limits = {}
        self._thread = None

    def arm(self, limit):
        with self._condition:
            self._limits[limit.thread] = limit
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name='gocept.runner.jobs time limits',
                    daemon=True)
                self._thread.start()
            self._condition.notify()

    def disarm(self, limit):
        """End `limit`; return whether it fired.  The watchdog never
        interrupts the thread for it after this."""
        with self._condition:
            self._limits.pop(limit.thread, None)
            self._condition.notify()
            if limit.fired:
                # Not delivered yet (it mostly is, by now): cancel it, the
                # caller raises it itself.
                _set_async_exc(limit.thread, ctypes.py_object())
            return limit.fired

    def _watch(self):
        with self._condition:
            # Ends when no thread is limited: a process whose jobs have no
            # time limits has no thread for them.
            while self._limits:
                now = time.monotonic()
                for limit in list(self._limits.values()):
                    if limit.deadline <= now:
                        self._fire(limit)
                if self._limits:
                    self._condition.wait(min(
                        limit.deadline for limit in self._limits.values()
                    ) - now)
            self._thread = None

    def _fire(self, limit):
        # Called with the condition's lock held, so that the thread cannot
        # leave its limited code at the same time.
        del self._limits[limit.thread]
        limit.fired = True
        _set_async_exc(limit.thread, ctypes.py_object(TimeLimitExceeded))


_watchdog = _Watchdog()


@contextlib.contextmanager
def time_limit(seconds):
    """Interrupt the block with TimeLimitExceeded after `seconds` (None:
    never).  What the block catches of it is raised again at its end."""
    if seconds is None:
        yield
        return
    limit = _Limit(seconds)
    _watchdog.arm(limit)
    try:
        yield
    finally:
        if _watchdog.disarm(limit):
            raise TimeLimitExceeded(
                f'Ran past its time limit of {seconds:g} seconds')
