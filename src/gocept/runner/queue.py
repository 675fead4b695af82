"""Several runners taking work from one queue of pending items in the ZODB."""

import random


def take(pending):
    """Remove one item from `pending`; return ``(key, value)``, or None.

    `pending` is a BTree with integer keys (IOBTree, LOBTree, ...).  The item
    is the first at or after a random point between the smallest and the
    largest key, so that runners taking items at the same time seldom touch
    the same bucket of the BTree.  When two changes to one bucket cannot be
    merged, one commit conflicts: its transaction is aborted, and its item
    stays pending, or is gone if the other runner took it.
    """
    # Taking the smallest key, as a queue would, makes concurrent ticks
    # conflict: removing the first key of a bucket conflicts with any other
    # change to that bucket.
    if not pending:
        return None
    key = pending.minKey(
        random.randint(pending.minKey(), pending.maxKey()))
    return key, pending.pop(key)
