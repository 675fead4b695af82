"""A queue of jobs in the ZODB that several runners take from at once."""

import random
import time

import persistent

from gocept.runner.shards import first_key
from gocept.runner.shards import job_count
from gocept.runner.shards import keep_sentinel
from gocept.runner.shards import new_shard


SHARDS = 64
# A key is the microsecond of `put` and as many random bits; 64-bit keys
# last till 2255.
RANDOM_BITS = 10


def _key(seconds):
    """The smallest key of a job put at `seconds` since the epoch."""
    return int(seconds * 1_000_000) << RANDOM_BITS


class Queue(persistent.Persistent):
    """Jobs waiting in the ZODB for runners to take them, one at a time.

    `take` removes a job in the transaction of the tick that does it: when
    that commits, the job is done and gone; when it is aborted (an error, a
    conflict), the job is still queued.  The jobs are kept in `shards`
    BTrees, fixed when the queue is made; the queue object itself never
    changes after that.  A put and a take of one shard commit side by side
    (see gocept.runner.shards), and runners seldom take from the same
    shard at the same time, so their commits seldom conflict.
    """

    # Seconds a new job is kept for the processes nearest to it.
    patience = 1.0

    def __init__(self, shards=SHARDS):
        if shards < 1:
            raise ValueError(f'A queue needs at least one shard, not {shards}')
        self._shards = tuple(new_shard() for _ in range(shards))

    def put(self, job):
        """Queue `job` (any object the ZODB can store) in a random shard.

        Within a shard, jobs are taken in the order they were put (by the
        time of `put`, when they come from several processes).
        """
        shard = random.choice(self._shards)
        keep_sentinel(shard)
        # The random bits keep puts at the same microsecond in other
        # transactions apart.
        key = _key(time.time()) | random.getrandbits(RANDOM_BITS)
        if key <= shard.maxKey():
            key = shard.maxKey() + 1
        shard[key] = job

    def take(self):
        """Remove the next job and return it; None if there is none to take
        now (``len(queue)`` tells whether there are jobs at all).

        Each process goes round the shards like the hand of a clock, from a
        random start, and takes the oldest job of the next shard that has
        one, so that processes seldom meet at a shard and every live process
        comes by every shard once a round: no job waits forever, also when
        the process that took from its shard before has died.  When the
        commit of a take fails (another process took the same job, or
        changed the shard in a way that cannot be merged), the hand steps
        back a random number of shards, away from the one it met, without
        skipping any.

        A job put less than `patience` seconds ago is left to the processes
        whose hands are nearer before its shard (one shard nearer, a
        `patience`/shards seconds earlier): when runners are idle, they
        would otherwise all take each new job at once.
        """
        count = len(self._shards)
        # Volatile, per process (connection): where the hand is.  When it
        # is lost (the object left the cache), the hand starts afresh.
        hand = getattr(self, '_v_hand', None)
        if hand is None:
            hand = random.randrange(count)
        now = time.time()
        for step in range(count):
            index = (hand + step) % count
            key = first_key(self._shards[index])
            if key is None:
                continue
            if key > _key(now - self.patience * step / count):
                continue  # fresh, for a hand nearer to it
            self._v_hand = (index + 1) % count
            if self._p_jar is not None:
                self._p_jar.transaction_manager.get().addAfterCommitHook(
                    self._step_back_unless, (index,))
            return self._shards[index].pop(key)
        return None

    def _step_back_unless(self, committed, index):
        if not committed:
            count = len(self._shards)
            self._v_hand = (index - random.randint(1, max(1, count // 2))
                            ) % count

    def __len__(self):
        """The number of queued jobs (reads every shard)."""
        return sum(job_count(shard) for shard in self._shards)

    def __bool__(self):
        return any(first_key(shard) is not None for shard in self._shards)
