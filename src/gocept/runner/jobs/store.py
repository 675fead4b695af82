"""Where jobs are kept: one Jobs container per database.

Every object here is written by as few writers as possible, so that
workers and the code that puts jobs seldom conflict: the container never
changes once made (its settings aside); pending jobs wait in shards, as in
gocept.runner.queue; a job's record is written only by the worker that
runs it; each worker process has a record that only its heartbeat writes,
and each of its workers a record that only that worker writes.  A
schedule's record is written only by the transaction that puts the job of
an occurrence, and how its jobs ended goes into an object of its own,
whose concurrent changes are resolved.  (A BTree
that many write at once would conflict whenever one of them empties it.)
"""

import collections
import os
import random
import socket
import time

import BTrees.Length
import BTrees.OOBTree
import persistent

from gocept.runner.jobs import record
from gocept.runner.jobs import wakeup
from gocept.runner.queue import RANDOM_BITS
from gocept.runner.shards import first_key
from gocept.runner.shards import job_count
from gocept.runner.shards import keep_sentinel
from gocept.runner.shards import new_shard


#: The key of the Jobs container in the root of its database.
ROOT_KEY = 'gocept.runner.jobs'
#: How many BTrees pending jobs are spread over.
SHARDS = 64
#: Seconds without a heartbeat after which a worker process is held dead
#: (the default of Jobs.dead_after).
DEAD_AFTER = 60
#: Seconds a done job (and its result) is kept (the default of
#: Jobs.keep_done).
KEEP_DONE = 24 * 3600
#: Done jobs removed in one transaction, at most.
EXPIRE_BATCH = 1000

_LOW_BITS = (1 << RANDOM_BITS) - 1


def _key(seconds):
    """The smallest key of a job due at `seconds` since the epoch."""
    return int(seconds * 1_000_000) << RANDOM_BITS


def _seconds(key):
    return (key >> RANDOM_BITS) / 1_000_000


class Jobs(persistent.Persistent):
    """The jobs of a database: pending, running, done and failed.

    A pending job waits in one of `shards` BTrees under a key made of its
    eta (in microseconds) and random low bits; a worker takes the earliest
    due job of the next shard that has one (see `take`).  A job not yet
    due is skipped, so delayed jobs and jobs waiting for their retry wait
    in the same place.  `dead_after` and `keep_done` (seconds) are stored
    with the container once set on it, for every worker to read.

    Each shard has a doorbell (`bells`), which changes whenever a job is
    queued in the shard (see gocept.runner.jobs.wakeup): a BTrees.Length,
    so that the commits of two puts do not conflict on it, and a ZEO
    server resolves them without any class of ours.
    """

    dead_after = DEAD_AFTER
    keep_done = KEEP_DONE
    # The schedules' records by name, once one is made (see schedule_record).
    _schedules = None

    def __init__(self, shards=SHARDS):
        if shards < 1:
            raise ValueError(f'Jobs need at least one shard, not {shards}')
        self._pending = tuple(new_shard() for _ in range(shards))
        # When each done job ends its time (a key as above) -> its id,
        # in as many shards.
        self._done = tuple(new_shard() for _ in range(shards))
        self._records = BTrees.OOBTree.OOBTree()
        self._failed = BTrees.OOBTree.OOBTree()
        # The worker processes: a key -> a ProcessRecord.
        self._processes = BTrees.OOBTree.OOBTree()
        self.bells = tuple(BTrees.Length.Length() for _ in range(shards))

    @property
    def shards(self):
        """How many shards pending jobs are spread over."""
        return len(self._pending)

    def shard_oids(self):
        """The oids of the shards, by index (None for a shard not yet
        stored); a commit that takes from a small shard changes its oid."""
        return tuple(shard._p_oid for shard in self._pending)

    def is_current(self, index):
        """Whether this connection holds the state of the shard `index`
        (not if another commit changed it since this connection read or
        wrote it)."""
        return self._pending[index]._p_changed is not None

    def due_in(self, index, now):
        """Whether a job of the shard `index` is due at `now`."""
        first = first_key(self._pending[index])
        return first is not None and first <= _key(now) | _LOW_BITS

    def __len__(self):
        """How many jobs are pending (reads every shard)."""
        return sum(job_count(shard) for shard in self._pending)

    def worker_keys(self):
        """The keys of the workers of the worker processes (the dead ones'
        included, until they are found dead)."""
        for process in self._processes.values():
            yield from process.workers.keys()

    def get(self, job_id):
        """The record of the job `job_id`, or None."""
        return self._records.get(job_id)

    def put(self, job):
        """Keep `job` (a new Job) and queue it for its eta."""
        self._records[job.id] = job
        self._queue(job, random.randrange(len(self._pending)))

    def _queue(self, job, index):
        shard = self._pending[index]
        keep_sentinel(shard)
        key = _key(job.eta) | random.getrandbits(RANDOM_BITS)
        while key in shard:
            key = _key(job.eta) | random.getrandbits(RANDOM_BITS)
        shard[key] = job
        job.state, job.shard, job.key = record.PENDING, index, key
        wakeup.ring(self, index)

    def requeue(self, job, eta):
        """Queue `job` again for `eta` (in a shard chosen at random)."""
        job.eta = eta
        self._queue(job, random.randrange(len(self._pending)))

    def give_back(self, job):
        """Queue `job`, taken but not begun, again as it was: its last
        attempt is forgotten."""
        job.forget_attempt()
        self._queue(job, job.shard)

    def take(self, now, accept=None, shards=None):
        """Remove the next job due at `now` from its shard and return it,
        and None; or None and when the next job is due (None if none is
        pending).  With `accept`, a job for which ``accept(job)`` is false
        is left where it is (and its shard passed over); with `shards` (a
        sequence of indexes), only those shards are looked at.

        Each connection goes round the shards like the hand of a clock, as
        gocept.runner.queue.Queue's take does, so that workers seldom meet
        at a shard; after a commit that failed, its hand steps back.
        """
        count = len(self._pending)
        hand = getattr(self, '_v_hand', None)
        if hand is None:
            hand = random.randrange(count)
        due = _key(now) | _LOW_BITS
        next_key = None
        indexes = ((hand + step) % count for step in range(count))
        if shards is not None:
            indexes = shards
        for index in indexes:
            shard = self._pending[index]
            key = first_key(shard)
            if key is None:
                continue
            if key > due:
                if next_key is None or key < next_key:
                    next_key = key
                continue
            if accept is not None and not accept(shard[key]):
                continue
            self._v_hand = (index + 1) % count
            if self._p_jar is not None:
                self._p_jar.transaction_manager.get().addAfterCommitHook(
                    self._step_back_unless, (index,))
                self._prefetch(self._v_hand)
            job = shard.pop(key)
            job.key = None
            return job, None
        return None, None if next_key is None else _seconds(next_key)

    def _prefetch(self, index):
        """Ask the storage for what the next take will read: the earliest
        job of the shard `index` if this connection has the shard, else the
        shard.  A ZEO client then has it in its cache when the take comes,
        without a round trip of its own."""
        shard = self._pending[index]
        if shard._p_changed is None:
            self._p_jar.prefetch(shard)
            return
        first = first_key(shard)
        if first is not None:
            self._p_jar.prefetch(shard[first])

    def _step_back_unless(self, committed, index):
        if not committed:
            count = len(self._pending)
            self._v_hand = (index - random.randint(1, max(1, count // 2))
                            ) % count

    def done(self, job, now):
        """Keep the done `job` for `keep_done` seconds from `now`."""
        self._ended(job, record.DONE, now)
        job.state = record.DONE
        # The shard it was taken from: workers seldom take from the same.
        shard = self._done[job.shard % len(self._done)]
        keep_sentinel(shard)
        key = _key(now) | random.getrandbits(RANDOM_BITS)
        while key in shard:
            key += 1
        shard[key] = job.id

    def fail(self, job):
        """Keep `job` among the failed jobs."""
        self._ended(job, record.FAILED, job.ended or time.time())
        job.state = record.FAILED
        self._failed[job.id] = job

    def failed(self):
        """The failed jobs, by id."""
        return self._failed.values()

    def records(self):
        """The record of every job kept, by id."""
        return self._records.values()

    def retry(self, job, now):
        """Queue the failed `job` again, due at `now`, with all its retries
        before it."""
        del self._failed[job.id]
        job.counted_from = len(job.attempts)
        self.requeue(job, now)

    def purge(self, job):
        """Remove the failed `job` for good."""
        del self._failed[job.id]
        del self._records[job.id]

    def expire(self, now, limit=EXPIRE_BATCH):
        """Remove up to `limit` done jobs whose time to be kept is over;
        return how many."""
        oldest = _key(now - self.keep_done) | _LOW_BITS
        removed = 0
        for shard in self._done:
            while removed < limit:
                first = first_key(shard)
                if first is None or first > oldest:
                    break
                job_id = shard.pop(first)
                job = self._records.get(job_id)
                if job is not None and job.state == record.DONE:
                    del self._records[job_id]
                removed += 1
        return removed

    def depth(self, now):
        """How many jobs are pending (due at `now`), delayed (pending, not
        yet due), running and failed, and when the earliest pending job is
        due: a Depth.

        It reads every bucket of every shard (of 100,000 pending jobs,
        about 1,700 buckets), and of the failed jobs: it is for a
        heartbeat's thread (see gocept.runner.jobs.metrics), not for a
        tick.
        """
        due = _key(now) | _LOW_BITS
        pending = delayed = 0
        earliest = None
        for shard in self._pending:
            first = first_key(shard)
            if first is None:
                continue
            if earliest is None or first < earliest:
                earliest = first
            if first > due:
                delayed += job_count(shard)
            else:
                waiting = len(shard.keys(min=due, excludemin=True))
                delayed += waiting
                pending += job_count(shard) - waiting
        running = sum(1 for _ in self.running())
        return Depth(pending, delayed, running, len(self._failed),
                     None if earliest is None else _seconds(earliest))

    def _ended(self, job, outcome, now):
        if job.schedule is not None:
            schedule = self.schedules().get(job.schedule)
            if schedule is not None:
                schedule.outcome.ended(outcome, now)

    def schedules(self):
        """The records of the schedules, by name."""
        return {} if self._schedules is None else self._schedules

    def schedule_record(self, name, last):
        """The ScheduleRecord of the schedule `name`, made (as dealt with
        up to `last`) if there is none."""
        if self._schedules is None:
            self._schedules = BTrees.OOBTree.OOBTree()
        schedule = self._schedules.get(name)
        if schedule is None:
            schedule = self._schedules[name] = ScheduleRecord(name, last)
        return schedule

    def purge_schedule(self, name):
        """Remove the record of the schedule `name` for good."""
        del self._schedules[name]

    def processes(self):
        """The records of the worker processes, by key."""
        return self._processes

    def running(self):
        """The running jobs, each with the WorkerRecord that runs it."""
        for process in self._processes.values():
            for worker in process.workers.values():
                for job, _ in worker.batch:
                    yield job, worker


#: How many jobs are in each state, and when the earliest pending job is
#: due (None if none is pending): see Jobs.depth.
Depth = collections.namedtuple(
    'Depth', ['pending', 'delayed', 'running', 'failed', 'earliest'])


class ProcessRecord(persistent.Persistent):
    """A worker process.  Its heartbeat (and nothing else) writes it every
    few seconds: when it has not for `Jobs.dead_after` seconds, the
    process is held dead and its running jobs failed."""

    def __init__(self, key):
        self.key = key
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started = self.seen = time.time()
        # The workers of the process: a key -> a WorkerRecord.
        self.workers = BTrees.OOBTree.OOBTree()

    def __repr__(self):
        return f'<ProcessRecord {self.key}>'


class WorkerRecord(persistent.Persistent):
    """A worker (a loop) of a process, written only by that worker: the
    jobs it has taken to run, `batch`, each with the number of its attempt
    (empty when it runs none)."""

    batch = ()

    def __init__(self, key):
        self.key = key

    def runs(self):
        """The jobs of `batch` that still run in this worker's attempts
        (one may have been taken from it: its process held dead)."""
        return [job for job, number in self.batch
                if job.runs_in(self.key, number)]

    def ended(self, job):
        """The attempt of `job` has ended: it leaves `batch`.  The others
        stay, running until theirs end (or until the worker's process is
        held dead, or the worker finds them left when the storage went
        away)."""
        self.batch = tuple(entry for entry in self.batch
                           if entry[0] is not job)

    def __repr__(self):
        return f'<WorkerRecord {self.key}>'


class ScheduleRecord(persistent.Persistent):
    """A schedule: its occurrences up to `last` (seconds since the epoch)
    are dealt with, put or skipped; `job_id` is the job of the last one put
    (at `occurrence`), by the worker process `put_by`.

    Only the transaction that puts (or skips) an occurrence writes it, so
    that of two processes that try the same occurrence, one conflicts.
    How its jobs ended is kept in `outcome`, which others write.
    """

    job_id = occurrence = put_by = None

    def __init__(self, name, last):
        self.name = name
        self.last = last
        self.outcome = ScheduleOutcome()

    def __repr__(self):
        return f'<ScheduleRecord {self.name}>'


class ScheduleOutcome(persistent.Persistent):
    """How the jobs of a schedule ended: the last one (`outcome`,
    'done' or 'failed', at `at`) and when one last succeeded
    (`last_success`).  Written when a job of the schedule ends; the
    changes of jobs that end at once are merged."""

    outcome = at = last_success = None

    def ended(self, outcome, now):
        """Record that a job ended with `outcome` at `now`."""
        if self.at is None or now >= self.at:
            self.outcome, self.at = outcome, now
        if outcome == record.DONE:
            self.last_success = max(now, self.last_success or now)

    def _p_resolveConflict(self, old, committed, new):
        merged = dict(committed)
        if (new.get('at') or 0) >= (committed.get('at') or 0):
            merged['outcome'], merged['at'] = new.get('outcome'), new.get('at')
        successes = [state['last_success'] for state in (committed, new)
                     if state.get('last_success') is not None]
        if successes:
            merged['last_success'] = max(successes)
        return merged


def process_key():
    """A key of this process unique among all hosts and times."""
    return (f'{socket.gethostname()}:{os.getpid()}:'
            f'{random.getrandbits(32):08x}')


def jobs_of(connection, create=False):
    """The Jobs container of the database of `connection`; None if there
    is none yet, unless `create` makes one (in the current transaction).
    """
    root = connection.root()
    jobs = root.get(ROOT_KEY)
    if jobs is None and create:
        jobs = root[ROOT_KEY] = Jobs()
        # Now, not at the commit: what a put does needs the connection.
        connection.add(jobs)
    return jobs
