"""The BTrees that queues keep their jobs in, so that putting and taking
commit side by side.

A shard maps keys (64-bit integers, from 0 up) to jobs, and jobs are taken
from its low end.  BTrees merge the commits of two transactions that
changed one bucket at different keys, except when one of them removed the
bucket's first key: a take that removed the first job of a shard would
conflict with every put into that bucket committed meanwhile (and an
expiry with every insert).  So every shard keeps SENTINEL, a key below
every job's, for good: a take removes the first job after it, and only two
takes of the same job conflict.
"""

import BTrees.LOBTree


#: The first key of every shard: no job's.
SENTINEL = -1


def new_shard():
    """A new, empty shard."""
    shard = BTrees.LOBTree.LOBTree()
    shard[SENTINEL] = None
    return shard


def keep_sentinel(shard):
    """Give `shard` its SENTINEL if it has none (a shard made before
    sentinels were): call before inserting into it."""
    shard.setdefault(SENTINEL, None)


def first_key(shard):
    """The key of the first job in `shard`, or None if it has none."""
    try:
        return shard.minKey(SENTINEL + 1)
    except ValueError:
        return None


def job_count(shard):
    """How many jobs `shard` holds."""
    return len(shard) - (SENTINEL in shard)
