"""Retrying a transaction that ran into a conflict."""

import random
import time

import transaction


ATTEMPTS = 3
# Seconds; the n-th retry pauses up to n times this long, at random, so that
# two processes that conflicted do not meet again at once.
PAUSE = 0.05


def _nothing():
    pass


def _always():
    return True


def run(func, attempts=ATTEMPTS, begin=_nothing, commit=transaction.commit,
        abort=transaction.abort, may_retry=_always, failed=None):
    """Call ``begin()``, ``func()`` and ``commit()``; return func's result.

    What the `transaction` package deems retryable (a ConflictError, a
    disconnected ZEO client) calls ``abort()`` and tries again after a short
    random pause, `attempts` times in all, as long as ``may_retry()`` says
    so; the error of the last attempt is raised.  Any other error calls
    ``abort()`` and is raised at once.  Returns `func`'s result and the
    number of attempts that were retried.  `failed`, if given, is called
    with the error of every attempt that failed, before the abort.

    `begin` defaults to nothing: the first attempt runs in the transaction
    the caller has, and the abort before a retry has brought the connection
    up to date already.
    """
    retried = 0
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
        time.sleep(random.uniform(0, PAUSE * retried))
