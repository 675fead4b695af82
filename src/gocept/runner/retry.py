"""Retrying a transaction that ran into a conflict."""

import random
import time

import transaction


ATTEMPTS = 3
# Seconds; the n-th retry pauses up to n times this long, at random, so that
# two processes that conflicted do not meet again at once.
PAUSE = 0.05


def run(func, attempts=ATTEMPTS):
    """Call `func` in the current transaction and commit.

    What the `transaction` package deems retryable (a ConflictError, a
    disconnected ZEO client) aborts and calls `func` again in a new
    transaction after a short random pause, `attempts` times in all; the
    error of the last attempt is raised.  Any other error is raised at once.
    The transaction is aborted before an error is raised.  Returns `func`'s
    result and the number of attempts that were retried.
    """
    # The first attempt runs in the transaction the caller has (begun):
    # attempts() would begin another, which costs a storage sync per tick.
    try:
        result = func()
        transaction.commit()
        return result, 0
    except BaseException as e:
        # Asked before the abort: data managers that joined may say, too.
        retryable = attempts > 1 and transaction.get().isRetryableError(e)
        transaction.abort()
        if not retryable:
            raise
    try:
        for number, attempt in enumerate(
                transaction.manager.attempts(attempts - 1), 1):
            time.sleep(random.uniform(0, PAUSE * number))
            with attempt:
                result = func()
    except BaseException:
        # The last attempt is the transaction manager itself, which does not
        # abort when its commit fails.
        transaction.abort()
        raise
    # attempts() ends after the first attempt that committed.
    return result, number
