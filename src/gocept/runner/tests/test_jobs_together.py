"""Which due jobs a worker takes to run together: in the process of the
test, on a database of its own, with a worker that runs no loop."""

import collections
import time
import types
import unittest
import uuid

import transaction
import ZODB
import ZODB.FileStorage
import ZODB.MappingStorage
from ZODB.POSException import ConflictError

from gocept.runner import testing
from gocept.runner.jobs import store
from gocept.runner.jobs import wakeup
from gocept.runner.jobs import worker
from gocept.runner.jobs.record import Job
from gocept.runner.tests import jobprograms


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
        self.assertEqual(1, len({job.principal for job in taken}))
        # In one shard, the first due jobs, up to one of another principal.
        self.jobs = self.connection.root()[store.ROOT_KEY] = store.Jobs(
            shards=1)
        transaction.commit()
        self.put(3, 'alice')
        self.put(3, 'bob')
        self.put(1, 'alice')
        taken, _ = self.take()
        self.assertEqual(['alice'] * 3, [job.principal for job in taken])
        self.assertEqual(4, len(self.jobs))

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

    def test_jobs_run_alone_after_their_batch_failed_run_in_its_record(
            self):
        # Until its attempt ends, each job of a batch stays in its worker's
        # record, by which the burst workers wait for it, a dead process's
        # jobs are found, and a worker finds its jobs left running when the
        # storage went away (see JobWorker._take).
        taker = worker.JobWorker(
            types.SimpleNamespace(running=False, act_as=lambda who: None,
                                  signal=None, process=None),
            self.connection, types.SimpleNamespace(key='process'))
        process = self.jobs.processes()['process'] = store.ProcessRecord(
            'process')
        taker.record = process.workers[taker.key] = store.WorkerRecord(
            taker.key)
        taker._endings = []
        taker._call_seconds = 0.001
        first, last = jobprograms.Counter(), jobprograms.Counter()
        self.connection.add(first)
        self.connection.add(last)
        for name, args in [('mark', (first,)), ('fail', ('together',)),
                           ('running_now', (last,))]:
            self.jobs.put(Job(uuid.uuid4().hex,
                              f'{jobprograms.MODULE}:{name}', args))
        transaction.commit()
        taken = taker._take_next(self.jobs, time.time() + 1)
        transaction.commit()
        # Run together, then, as one fails, alone in this order.
        order = ['mark', 'fail', 'running_now']
        taken.sort(key=lambda pair: order.index(pair[0].name.split(':')[1]))
        taker._run(taken)
        done, failed, probe = (job for job, _ in taken)
        self.assertEqual((1, 1), (first.count, last.count))
        self.assertEqual([probe.id], last.running)
        self.assertEqual(('done', 'pending', 'done'),
                         (done.state, failed.state, probe.state))
        self.assertEqual((), taker.record.batch)

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

    def idle_takers(self, count, watcher):
        """`count` idle workers of the database, woken by `watcher`, that
        looked at every shard just now."""
        takers = []
        for key in self.register(count):
            taker = worker.JobWorker(
                None, self.connection, types.SimpleNamespace(key='process'),
                watcher=watcher)
            taker.key = key
            taker._poll_at = time.monotonic() + worker.POLL
            takers.append(taker)
        watcher.attend(self.jobs)
        watcher.clear(range(self.jobs.shards), time.monotonic())
        return takers

    def test_woken_workers_look_at_their_shards_at_once_others_in_turns(
            self):
        watcher = wakeup.Watcher(self.db)
        takers = self.idle_takers(4, watcher)
        # Nothing queued since they looked: they wait for the poll.
        for pause, shards in [taker._plan() for taker in takers]:
            self.assertEqual((), shards)
            self.assertGreater(pause, worker.POLL / 2)
        for tid, owner in zip(tids(1, 2, 3, 4), (2, 0, 3, 1)):
            shard = takers[owner]._share(self.jobs)[1]
            watcher.wake(tid, frozenset([shard]))
            plans = [taker._plan() for taker in takers]
            self.assertEqual((0, [shard]), plans[owner])
            # The others one after the other, after it.
            turns = [round(pause / taker._spacing())
                     for taker, (pause, _) in zip(takers, plans)]
            self.assertEqual([1, 2, 3], sorted(turns[:owner] +
                                               turns[owner + 1:]))
            watcher.clear([shard], time.monotonic())
        # Which worker is next depends on the transaction that rang last.
        self.assertEqual(1, len({
            tuple(round(taker._plan()[0] / taker._spacing())
                  for taker in takers) for _ in range(2)}))

    def test_a_worker_that_polls_hears_the_doorbells_from_then_on(self):
        watcher = wakeup.Watcher(self.db)
        [key] = self.register(1)
        taker = worker.JobWorker(
            None, self.connection, types.SimpleNamespace(key='process'),
            watcher=watcher)
        taker.key = key
        # Nothing woke it before its poll: it learns the doorbells then.
        self.assertEqual({}, watcher.bells)
        self.assertEqual((0, None), taker._plan())
        self.assertEqual(self.jobs.shards, len(watcher.bells))

    def test_when_its_turn_comes_a_worker_looks_unless_the_job_went(self):
        watcher = wakeup.Watcher(self.db)
        takers = self.idle_takers(2, watcher)
        shard = takers[0]._share(self.jobs)[0]
        oid = self.jobs.shard_oids()[shard]
        first, taken, second = tids(1, 2, 3)
        watcher.wake(first, frozenset([shard]))
        self.assertEqual((0, [shard]), takers[0]._plan())
        self.assertGreater(takers[1]._plan()[0], 0)
        # The worker of the shard took the job: another process's commit
        # changed the shard, and rang no doorbell.
        watcher.invalidated(taken, [oid])
        time.sleep(takers[1]._spacing() * 2)
        # Its turn has come: it waits on for the poll.
        pause, shards = takers[1]._plan()
        self.assertEqual((), shards)
        self.assertGreater(pause, worker.POLL / 2)
        # Not taken: it looks at the shard in its turn.
        watcher.wake(second, frozenset([shard]))
        self.assertGreater(takers[1]._plan()[0], 0)
        time.sleep(takers[1]._spacing() * 2)
        self.assertEqual((0, [shard]), takers[1]._plan())
        # Every shard, when the poll is due.
        takers[1]._poll_at = time.monotonic()
        self.assertEqual((0, None), takers[1]._plan())

    def test_a_worker_that_found_its_shards_empty_waits_for_its_turn(self):
        # Woken for a shard of its own and one of another's, it finds its
        # own empty (the job went elsewhere): it looks at the other's in its
        # turn, not at its next look at every shard.
        watcher = wakeup.Watcher(self.db)
        takers = self.idle_takers(2, watcher)
        for taker in takers:
            taker.liveness.key = 'elsewhere'
        loop = types.SimpleNamespace(in_worker=False, running=True)
        takers[0].loop = loop
        self.addCleanup(lambda: takers[0]._since and
                        transaction.manager.unregisterSynch(takers[0]._since))
        own, other = takers[0]._share(self.jobs)[0], takers[1]._share(
            self.jobs)[0]
        job = Job(uuid.uuid4().hex, MARK)
        self.jobs._records[job.id] = job
        self.jobs._queue(job, other)
        transaction.commit()
        watcher.wake(tids(1)[0], frozenset([own, other]))
        pause = takers[0].tick()
        self.assertLess(pause, worker.MAX_TURN)
        self.assertEqual({other}, set(watcher.candidates(self.jobs.shards)))
        time.sleep(pause)
        self.assertEqual((0, [other]), takers[0]._plan())

    def test_workers_read_in_an_old_transaction_are_read_again(self):
        # A run's transaction began when its job was taken, maybe long
        # ago: what it read of the workers is as old as that.
        taker = worker.JobWorker(
            None, self.connection, types.SimpleNamespace(key='process'))
        first = self.register(1)
        taker.since = time.monotonic() - 2 * worker.WORKERS_SECONDS
        self.assertEqual(tuple(first), taker._worker_keys(self.jobs))
        process = self.jobs.processes()['elsewhere']
        process.workers['elsewhere/new'] = store.WorkerRecord('elsewhere/new')
        transaction.commit()
        taker.since = time.monotonic()
        self.assertIn('elsewhere/new', taker._worker_keys(self.jobs))
        # Read in a transaction of now, they hold for WORKERS_SECONDS.
        del process.workers['elsewhere/new']
        transaction.commit()
        self.assertIn('elsewhere/new', taker._worker_keys(self.jobs))

    def test_a_take_that_leaves_a_due_job_in_its_shard_rings_again(self):
        class Loop:
            def tick_now(self):
                pass
        loop = Loop()
        watcher = wakeup.watch(loop, self.db)
        self.addCleanup(wakeup.unwatch, loop, self.db)
        jobs = self.connection.root()['two shards'] = store.Jobs(shards=2)
        for _ in range(3):
            jobs.put(Job(uuid.uuid4().hex, MARK))
        transaction.commit()
        left = collections.Counter(job.shard for job in jobs.records())
        for _ in range(3):
            rung = watcher.rung
            taker = worker.JobWorker(
                None, self.connection, types.SimpleNamespace(key='process'))
            taker.record = store.WorkerRecord(taker.key)
            taker._endings = []
            taker._call_seconds = worker.BATCH_SECONDS  # one at a time
            [(job, _)] = taker._take_next(jobs, time.time() + 1)
            transaction.commit()
            left[job.shard] -= 1
            if left[job.shard]:
                self.assertEqual(frozenset([job.shard]), watcher.rung.shards)
                self.assertEqual(self.db.lastTransaction(), watcher.rung.tid)
            else:
                self.assertIs(rung, watcher.rung)

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
        self.assertEqual([], stranger._own_shards(self.jobs))


class ConcurrentPutTest(unittest.TestCase):
    """A take and a put into the same shard at the same time, on a
    FileStorage (which resolves the conflicts it can)."""

    def setUp(self):
        self.db = testing.file_storage_db(self)
        self.connection = self.db.open()
        self.addCleanup(self.connection.close)
        self.addCleanup(transaction.abort)
        self.jobs = self.connection.root()[store.ROOT_KEY] = store.Jobs(
            shards=1)
        self.jobs.put(Job(uuid.uuid4().hex, MARK))
        # One not yet due, which the take leaves.
        self.jobs.put(Job(uuid.uuid4().hex, MARK, eta=time.time() + 3600))
        transaction.commit()
        self.taker = worker.JobWorker(
            None, self.connection, types.SimpleNamespace(key='process'))
        self.taker.record = store.WorkerRecord(self.taker.key)
        self.taker._endings = []

    def put_elsewhere(self):
        """Put a due job, in a transaction of another connection; return
        that transaction (to commit)."""
        manager = transaction.TransactionManager()
        other = self.db.open(manager)
        self.addCleanup(other.close)
        store.jobs_of(other).put(Job(uuid.uuid4().hex, MARK))
        return manager

    def bell(self):
        return self.jobs.bells[0]()

    def test_a_take_that_merged_with_a_put_rings_again(self):
        # So a take that commits and rings nothing left no due job, as the
        # workers of other processes conclude (wakeup.Watcher).
        [(job, _)] = self.taker._take_next(self.jobs, time.time())
        self.put_elsewhere().commit()
        transaction.commit()
        self.assertEqual({0}, self.taker._merged)
        transaction.begin()
        rung = self.bell()
        self.taker._ring_again()
        self.assertEqual(set(), self.taker._merged)
        self.assertEqual(rung + 1, self.bell())
        self.assertTrue(self.jobs.due_in(0, time.time()))
        self.assertEqual(2, len(self.jobs))

    def test_a_put_commits_after_a_take_from_its_shard(self):
        # The transaction of a web request that puts a job does not
        # conflict with the workers' takes.
        put = self.put_elsewhere()
        self.taker._take_next(self.jobs, time.time())
        transaction.commit()
        self.assertEqual(set(), self.taker._merged)
        put.commit()
        transaction.begin()
        self.assertEqual(2, len(self.jobs))
        self.assertTrue(self.jobs.due_in(0, time.time()))

    def test_takes_of_the_same_job_conflict(self):
        other = self.db.open(transaction.TransactionManager())
        self.addCleanup(other.close)
        jobs = store.jobs_of(other)
        jobs.take(time.time())
        self.taker._take_next(self.jobs, time.time())
        other.transaction_manager.commit()
        with self.assertRaises(ConflictError):
            transaction.commit()
