"""Retrying a transaction that ran into a conflict."""

import random
import time

import transaction


ATTEMPTS = 3
# Seconds; the n-th retry pauses up to n times this long, at random, so that
# two processes that conflicted do not meet again at once.
PAUSE = 0.05


def run(func, attempts=ATTEMPTS):
    """Call `func` in a transaction of its own and commit.

    What the `transaction` package deems retryable (a ConflictError, a
    disconnected ZEO client) aborts and calls `func` again after a short
    random pause, `attempts` times in all; the error of the last attempt is
    raised.  Any other error is raised at once.  The transaction is aborted
    before an error is raised.  Returns `func`'s result and the number of
    attempts that were retried.
    """
    try:
        for number, attempt in enumerate(
                transaction.manager.attempts(attempts)):
            if number:
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
