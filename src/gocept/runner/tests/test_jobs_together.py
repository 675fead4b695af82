"""Which due jobs a worker takes to run together: in the process of the
test, on a database of its own, with a worker that runs no loop."""

import time
import types
import unittest
import uuid

import transaction
import ZODB
import ZODB.MappingStorage

from gocept.runner.jobs import store
from gocept.runner.jobs import wakeup
from gocept.runner.jobs import worker
from gocept.runner.jobs.record import Job
from gocept.runner.tests import jobprograms  # noqa: F401 (its job functions)


MARK = 'gocept.runner.tests.jobprograms:mark'


def tids(*numbers):
    """Transaction ids, one after the other as a storage gives them."""
    return [(0x03e8 << 48 | number).to_bytes(8, 'big') for number in numbers]


class TakeTogetherTest(unittest.TestCase):

    def setUp(self):
        self.db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
        self.addCleanup(self.db.close)
        self.connection = self.db.open()
        self.addCleanup(self.connection.close)
        self.addCleanup(transaction.abort)
        self.jobs = store.jobs_of(self.connection, create=True)
        transaction.commit()

    def put(self, count, principal=None, died=False):
        """Put `count` jobs of `principal`; with `died`, each has an
        attempt before that ended as its process died."""
        for _ in range(count):
            job = Job(uuid.uuid4().hex, MARK, principal=principal)
            if died:
                job.begin_attempt('gone', time.time())
                job.end_attempt('died', time.time())
            self.jobs.put(job)
        transaction.commit()

    def take(self, call_seconds=0.001):
        """What a worker whose jobs took `call_seconds` each takes."""
        taker = worker.JobWorker(
            None, self.connection, types.SimpleNamespace(key='process'))
        taker.record = store.WorkerRecord(taker.key)
        taker._endings = []
        taker._call_seconds = call_seconds
        taken = taker._take_next(self.jobs, time.time() + 1) or []
        return [job for job, _ in taken], taker.record

    def test_as_many_as_fit_in_batch_seconds_at_most_batch(self):
        self.put(worker.BATCH + 5)
        taken, record = self.take()
        self.assertEqual(worker.BATCH, len(taken))
        self.assertEqual([(job, 1) for job in taken], list(record.batch))
        self.assertEqual(['running'] * worker.BATCH,
                         [job.state for job in taken])
        self.assertEqual(5, len(self.jobs))
        transaction.abort()
        # Jobs of 40 ms: two and a half fit in 0.1 s.
        taken, _ = self.take(call_seconds=0.04)
        self.assertEqual(2, len(taken))

    def test_before_the_first_job_ran_one_job(self):
        self.put(3)
        taken, _ = self.take(call_seconds=None)
        self.assertEqual(1, len(taken))

    def test_jobs_of_one_principal(self):
        self.put(3, 'alice')
        self.put(3, 'bob')
        taken, _ = self.take()
        self.assertEqual(3, len(taken))
        self.assertEqual(1, len({job.principal for job in taken}))
        self.assertEqual(3, len(self.jobs))

    def test_a_job_whose_process_died_alone(self):
        self.put(4, died=True)
        taken, _ = self.take()
        self.assertEqual(1, len(taken))
        transaction.abort()
        self.put(4)
        for _ in range(10):
            transaction.abort()
            taken, _ = self.take()
            # Never with another: first and alone, or not at all.
            died = [job for job in taken if len(job.attempts) == 2]
            self.assertTrue(taken == died or not died, taken)

    def register(self, workers):
        """A worker process with `workers` workers, as the liveness of
        running workers records them; return their keys."""
        process = store.ProcessRecord('elsewhere')
        for number in range(workers):
            key = f'elsewhere/{number}'
            process.workers[key] = store.WorkerRecord(key)
        self.jobs.processes()[process.key] = process
        transaction.commit()
        return list(process.workers.keys())

    def test_idle_workers_woken_by_a_job_look_in_turns(self):
        watcher = wakeup.Watcher(self.db)
        takers = []
        for key in self.register(4):
            taker = worker.JobWorker(
                None, self.connection, types.SimpleNamespace(key='process'),
                watcher=watcher)
            taker.key = key
            taker._idle = True
            takers.append(taker)
        for tid in tids(1, 2):
            watcher.wake(tid)
            turns = [taker._turn() for taker in takers]
            # One looks now, the others one after the other.
            self.assertEqual(0, min(turns))
            self.assertEqual([1, 2, 3], sorted(
                round(turn / worker.TURN) for turn in turns if turn))
            # Once each wake-up.
            self.assertEqual([0] * 4, [taker._turn() for taker in takers])
        # Which worker looks first depends on the transaction that rang.
        [tid] = tids(3)
        watcher.wake(tid)
        self.assertNotEqual(0, turns.index(0) - [
            taker._turn() for taker in takers].index(0))
        # A busy worker takes after its run; a wake-up of unknown origin
        # has every worker look at once.
        takers[0]._idle = False
        [tid] = tids(4)
        watcher.wake(tid)
        self.assertEqual(0, takers[0]._turn())
        watcher.wake(None)
        self.assertEqual([0] * 4, [taker._turn() for taker in takers])

    def test_a_run_takes_from_its_own_shards_only(self):
        # The database's workers share the shards out among themselves:
        # two runs never take the same job.
        keys = self.register(3)
        takers = []
        for key in keys:
            taker = worker.JobWorker(
                None, self.connection, types.SimpleNamespace(key='process'))
            taker.key = key
            taker.record = store.WorkerRecord(key)
            taker._endings = []
            taker._call_seconds = 0.001
            takers.append(taker)
        shares = [set(taker._own_shards(self.jobs)) for taker in takers]
        self.assertEqual(set(range(self.jobs.shards)), set.union(*shares))
        self.assertEqual(self.jobs.shards, sum(map(len, shares)))
        self.put(2 * self.jobs.shards)
        for taker, share in zip(takers, shares):
            taken = taker._take_next(self.jobs, time.time() + 1,
                                     taker._own_shards(self.jobs))
            self.assertEqual(worker.BATCH, len(taken))
            self.assertLessEqual({job.shard for job, _ in taken}, share)
        # A worker not (yet) among them has none.
        stranger = worker.JobWorker(
            None, self.connection, types.SimpleNamespace(key='process'))
        self.assertEqual((), stranger._own_shards(self.jobs))
