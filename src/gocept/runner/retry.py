"""Trying again: a transaction that ran into a conflict, anything that
failed for a passing reason, and the pauses in between.

Every retry and back-off of the package is one of these: `run` (a
transaction), `call` (anything else) and the pauses of a `Backoff`.
"""

import logging
import random
import time

import transaction


log = logging.getLogger(__name__)

ATTEMPTS = 3
# Seconds; the n-th retry pauses up to 2**(n-1) times this long, at random,
# so that two processes that conflicted do not meet again at once.
PAUSE = 0.05


class Backoff:
    """The pauses between attempts: `first` seconds, doubling each time up
    to `longest`.

    With `jitter`, each pause is a random part of that (from 0 up), so that
    processes that failed together do not try again together.  `reset`
    starts over from `first` (after a success, say).
    """

    def __init__(self, first, longest, jitter=False):
        self.first = first
        self.longest = longest
        self.jitter = jitter
        self.reset()

    def reset(self):
        self._next = self.first

    def __iter__(self):
        return self

    def __next__(self):
        """The next pause, in seconds."""
        pause = self._next
        self._next = min(2 * pause, self.longest)
        return random.uniform(0, pause) if self.jitter else pause


def _nothing():
    pass


def _always():
    return True


def run(func, attempts=ATTEMPTS, begin=_nothing, commit=transaction.commit,
        abort=transaction.abort, may_retry=_always, failed=None):
    """Call ``begin()``, ``func()`` and ``commit()``; return func's result.

    What the `transaction` package deems retryable (a ConflictError, a
    disconnected ZEO client) calls ``abort()`` and tries again after a short
    random pause (a Backoff from PAUSE), `attempts` times in all, as long as
    ``may_retry()`` says so; the error of the last attempt is raised.  Any
    other error calls ``abort()`` and is raised at once.  Returns `func`'s
    result and the number of attempts that were retried.  `failed`, if
    given, is called with the error of every attempt that failed, before
    the abort.

    `begin` defaults to nothing: the first attempt runs in the transaction
    the caller has, and the abort before a retry has brought the connection
    up to date already.
    """
    retried = 0
    pauses = None
    while True:
        begin()
        try:
            result = func()
            commit()
            return result, retried
        except BaseException as e:
            if failed is not None:
                failed(e)
            # Asked before the abort: data managers that joined may say, too.
            retryable = (retried + 1 < attempts and
                         transaction.get().isRetryableError(e) and
                         may_retry())
            abort()
            if not retryable:
                raise
        retried += 1
        if pauses is None:
            pauses = Backoff(PAUSE, 1, jitter=True)
        time.sleep(next(pauses))


def call(func, attempts, retryable, pauses):
    """Call ``func()`` until it returns, `attempts` times at most; return
    its result.

    An error for which ``retryable(error)`` is true is tried again after
    the next of `pauses` (a Backoff) and logged at DEBUG; the last
    attempt's error, and any other, is raised.
    """
    for attempt in range(1, attempts + 1):
        try:
            return func()
        except Exception as e:
            if attempt == attempts or not retryable(e):
                raise
            log.debug('Attempt %s of %s failed, trying again: %r',
                      attempt, attempts, e)
            time.sleep(next(pauses))
