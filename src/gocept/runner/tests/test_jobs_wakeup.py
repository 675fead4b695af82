"""An idle worker wakes when a job is queued: for a job put by another
process on a ZEO server and on a PostgreSQL server (RelStorage), and for
jobs that a job puts in the same process on a FileStorage.

In the tests with worker processes, the workers' poll is made POLL seconds
long: a job started within SOON seconds was found by the wake-up, not by
the poll.
"""

import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

import transaction
import ZODB.config

from gocept.runner import jobs
from gocept.runner import testing
from gocept.runner.jobs import store
from gocept.runner.jobs import wakeup
from gocept.runner.jobs.record import Job
from gocept.runner.tests import jobprograms
from gocept.runner.tests.fakeloop import root


POLL = 30
# Seconds within which a woken worker starts a job: not a tight bound, but
# far below the poll.
SOON = 10
TIMEOUT = 60
# Ids of transactions, as a ZEO client is told them.
TIDS = [(0x03e8 << 48 | number).to_bytes(8, 'big') for number in (1, 2, 3)]


class Loop:
    """Stands for a MainLoop: counts how often it was told to tick now."""

    woken = 0

    def tick_now(self):
        self.woken += 1


class WatcherTest(unittest.TestCase):
    """The Watcher of a database's workers, in this process, on a
    FileStorage."""

    def setUp(self):
        self.root = root(self)
        self.db = self.root._p_jar.db()
        self.jobs = store.jobs_of(self.root._p_jar, create=True)
        transaction.commit()
        self.loops = [Loop(), Loop()]
        self.watcher = None
        for loop in self.loops:
            self.watcher = wakeup.watch(loop, self.db)
            self.addCleanup(wakeup.unwatch, loop, self.db)

    def put(self):
        self.jobs.put(Job(uuid.uuid4().hex, 'module:function', ()))

    def woken(self):
        return [loop.woken for loop in self.loops]

    def test_a_commit_that_queues_jobs_wakes_every_loop_once(self):
        self.put()
        self.put()
        self.assertEqual([0, 0], self.woken())
        transaction.commit()
        self.assertEqual([1, 1], self.woken())

    def test_a_commit_wakes_the_loops_once_however_they_hear_of_it(self):
        # The committing process of a RelStorage on PostgreSQL hears of
        # its commit from its hook and from the server's notification.
        self.put()
        transaction.commit()
        # The id of the commit that rang, as other processes hear it.
        tid = self.db.lastTransaction()
        self.assertEqual((tid, [1, 1]), (self.watcher.rung[0], self.woken()))
        self.watcher.wake(tid)
        self.assertEqual([1, 1], self.woken())
        # A wake-up that does not know the commit wakes them all the same.
        self.watcher.wake(None)
        self.watcher.wake(None)
        self.assertEqual([3, 3], self.woken())

    def test_the_put_that_makes_the_container_wakes_every_loop(self):
        del self.root[store.ROOT_KEY]
        transaction.commit()
        self.jobs = store.jobs_of(self.root._p_jar, create=True)
        self.put()
        transaction.commit()
        self.assertEqual([1, 1], self.woken())

    def test_a_put_that_aborts_wakes_nobody(self):
        self.put()
        transaction.abort()
        self.assertEqual([0, 0], self.woken())

    def test_of_others_commits_only_those_that_rang_wake(self):
        # What the Relay shows it of ZEO's invalidations.
        self.watcher.attend(self.jobs)
        self.root['other'] = 'unrelated'
        transaction.commit()
        self.watcher.invalidated(TIDS[0], [self.jobs._p_oid])
        self.assertEqual([0, 0], self.woken())
        self.watcher.invalidated(
            TIDS[1], [self.jobs._p_oid, self.jobs.bells[5]._p_oid])
        self.assertEqual([1, 1], self.woken())
        self.assertEqual((TIDS[1], {5}), (self.watcher.rung.tid,
                                          self.watcher.rung.shards))
        # The commit that makes the container changes the root.
        self.watcher.invalidated(TIDS[2], {self.root._p_oid})
        self.assertEqual([2, 2], self.woken())

    def test_it_knows_the_shards_that_may_have_a_due_job(self):
        self.watcher.attend(self.jobs)
        shards = self.jobs.shards
        # Knowing nothing: any.
        self.assertEqual(shards, len(self.watcher.candidates(shards)))
        self.watcher.clear(range(shards), time.monotonic())
        self.assertEqual({}, self.watcher.candidates(shards))
        oids = self.jobs.shard_oids()
        bells = [bell._p_oid for bell in self.jobs.bells]
        # Another process queued jobs in shards 3 and 4.
        self.watcher.invalidated(TIDS[0], [bells[3], oids[3], bells[4]])
        self.assertEqual({3, 4}, set(self.watcher.candidates(shards)))
        # A commit that took from shard 3 and rang no doorbell.
        self.watcher.invalidated(TIDS[1], [oids[3]])
        self.assertEqual({4}, set(self.watcher.candidates(shards)))
        # One that took from shard 4, left a due job and rang.
        self.watcher.invalidated(TIDS[2], [oids[4], bells[4]])
        self.assertEqual({4}, set(self.watcher.candidates(shards)))
        # A look found it without one.
        self.watcher.clear([4], time.monotonic())
        self.assertEqual({}, self.watcher.candidates(shards))
        # A wake-up of unknown origin: any.
        self.watcher.wake()
        self.assertEqual(shards, len(self.watcher.candidates(shards)))

    def test_the_shards_a_notification_names(self):
        tid = TIDS[0]
        self.assertEqual((tid, {1, 12}), wakeup._ring(f'{tid.hex()} 1,12'))
        self.assertEqual((tid, set()), wakeup._ring(tid.hex()))
        self.assertEqual((tid, set()), wakeup._ring(f'{tid.hex()} '))
        for payload in ('', 'nonsense', 'abcd 1', f'{tid.hex()} 1,x'):
            self.assertEqual((None, set()), wakeup._ring(payload))

    def test_a_loop_no_longer_watching_is_not_woken(self):
        wakeup.unwatch(self.loops[0], self.db)
        self.put()
        transaction.commit()
        self.assertEqual([0, 1], self.woken())
        wakeup.unwatch(self.loops[1], self.db)
        self.put()
        transaction.commit()
        self.assertEqual([0, 1], self.woken())


class OtherProcess:
    """A job put by another process than the worker's; a subclass says on
    which server."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='gocept.runner.wakeup.')
        self.addCleanup(shutil.rmtree, self.dir)
        self.worker = None
        self.addCleanup(self.kill_worker)
        jobprograms.write_zope_conf(self.dir, self.zodb_section())
        # A fresh container: the server may have others' jobs.
        with self.client() as client:
            transaction.begin()
            client.root[store.ROOT_KEY] = store.Jobs()
            transaction.commit()

    def client(self):
        return jobprograms.client(self.zodb_section())

    def kill_worker(self):
        if self.worker is not None and self.worker.poll() is None:
            self.worker.kill()
            self.worker.wait()

    def start_idle_worker(self, client):
        """Start a worker process; return when its worker has looked for
        jobs (and found none: it sleeps for its poll now)."""
        self.worker = jobprograms.start(self.dir, poll=POLL)

        def idle():
            container = store.jobs_of(client.connection)
            return container is not None and any(
                process.workers for process in
                container.processes().values())
        client.wait(idle, TIMEOUT, jobprograms.output(self.dir))

    def stop_worker(self):
        self.worker.send_signal(signal.SIGTERM)
        self.assertEqual(0, self.worker.wait(TIMEOUT),
                         jobprograms.output(self.dir))

    def assert_started_soon(self, client, job_id, after=0):
        """The job `job_id` is done, started less than SOON seconds after
        it was put (and `after` seconds)."""
        client.wait(lambda: jobs.status(job_id) == 'done', TIMEOUT,
                    jobprograms.output(self.dir))
        job = client.record(job_id)
        attempt, = job.attempts
        self.assertLess(attempt.started - job.created, after + SOON)
        return job

    def test_a_job_put_while_the_worker_idles_is_started_soon(self):
        with self.client() as client:
            self.start_idle_worker(client)
            for _ in range(2):
                counter, = client.counters(1)
                job_id = jobprograms.mark.delay(counter)
                transaction.commit()
                self.assert_started_soon(client, job_id)
                self.assertEqual(1, client.counters_of()[0].count)
        self.stop_worker()

    def test_jobs_put_by_commits_in_a_row_are_each_started_soon(self):
        # However the wake-ups of the commits reach the worker: one at a
        # time, or several together while it takes a job.
        with self.client() as client:
            self.start_idle_worker(client)
            counters = client.counters(20)
            job_ids = []
            for counter in counters:
                job_ids.append(jobprograms.mark.delay(counter))
                transaction.commit()
            for job_id in job_ids:
                self.assert_started_soon(client, job_id)
        self.stop_worker()

    def test_a_delayed_job_put_while_the_worker_idles_is_taken_in_time(
            self):
        with self.client() as client:
            self.start_idle_worker(client)
            counter, = client.counters(1)
            job_id = jobprograms.mark.apply_async((counter,), countdown=2)
            transaction.commit()
            job = self.assert_started_soon(client, job_id, after=2)
            # Woken, it knew when the job is due.
            self.assertGreaterEqual(job.attempts[0].started, job.eta)
            self.assertLess(job.attempts[0].started, job.eta + 1)
        self.stop_worker()


class ZEOTest(OtherProcess, unittest.TestCase):

    layer = testing.ZEO_LAYER

    def zodb_section(self):
        return self.layer.server.zodb_section()


class RelStorageTest(OtherProcess, unittest.TestCase):

    layer = testing.POSTGRESQL_LAYER

    def setUp(self):
        if self.layer.server is None:
            self.skipTest(self.layer.missing)
        self.dbname = f'wakeup_{uuid.uuid4().hex}'
        self.layer.server.create_database(self.dbname)
        self.addCleanup(self.layer.server.drop_database, self.dbname)
        super().setUp()

    def zodb_section(self):
        return self.layer.server.zodb_section(self.dbname)


class ListenerTest(unittest.TestCase):
    """The Listener of a RelStorage's workers, on the real PostgreSQL."""

    layer = testing.POSTGRESQL_LAYER

    def setUp(self):
        if self.layer.server is None:
            self.skipTest(self.layer.missing)
        dbname = f'listener_{uuid.uuid4().hex}'
        self.layer.server.create_database(dbname)
        self.addCleanup(self.layer.server.drop_database, dbname)
        db = ZODB.config.databaseFromString(
            self.layer.server.zodb_section(dbname))
        self.addCleanup(db.close)
        self.adapter = wakeup.postgresql_adapter(db.storage)
        self.rings = []
        listener = wakeup.Listener(
            self.adapter, lambda *ring: self.rings.append(ring))
        listener.start()
        self.addCleanup(listener.stop)
        self.connection, self.cursor = self.adapter.connmanager.open()
        self.addCleanup(self.connection.close)
        self.wait(self.listening)
        del self.rings[:]

    def wait(self, condition):
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.01)

    def listening(self):
        """Whether a notification without a transaction id woke the
        listener; else send one."""
        if self.rings:
            return True
        self.cursor.execute(f"NOTIFY {wakeup.CHANNEL}, 'hello'")
        self.connection.commit()
        time.sleep(0.1)
        return False

    def test_notifications_that_arrive_together_each_wake(self):
        # Commits in a row, read by one poll of the listening connection
        # while its thread waited for the CPU: each names its shards.
        for tid, index in zip(TIDS, (4, 7, 9)):
            self.cursor.execute(
                f"NOTIFY {wakeup.CHANNEL}, '{tid.hex()} {index}'")
        self.connection.commit()
        # The last is read last.
        self.wait(lambda: TIDS[-1] in [tid for tid, _ in self.rings])
        self.assertEqual(
            [(tid, frozenset([index])) for tid, index in zip(TIDS, (4, 7, 9))],
            self.rings)


class FileStorageTest(unittest.TestCase):
    """Workers in threads of one process on a FileStorage, which only one
    process may open."""

    layer = testing.JobsLayer

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='gocept.runner.wakeup.')
        self.addCleanup(shutil.rmtree, self.dir)
        self.zodb = (f'<zodb>\n  <filestorage>\n    path {self.dir}/Data.fs\n'
                     '  </filestorage>\n</zodb>\n')
        jobprograms.write_zope_conf(self.dir, self.zodb)

    def test_a_job_that_puts_jobs_wakes_the_idle_worker(self):
        # One worker runs `spawn`, the other idles; after 2 seconds spawn
        # puts two naps of 5 seconds.  Woken, the idle worker takes one
        # while the other takes the other: no nap waits for another.
        with jobprograms.client(self.zodb) as client:
            counters = client.counters(2)
            jobprograms.spawn.delay(counters, 5, after=2)
            transaction.commit()
        # It runs until its max_runtime: burst would wait for the poll.
        worker = jobprograms.start(self.dir, workers=2, poll=POLL,
                                   max_runtime=12)
        try:
            self.assertEqual(75, worker.wait(TIMEOUT),
                             jobprograms.output(self.dir))
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        with jobprograms.client(self.zodb) as client:
            container = client.fresh()
            naps = [job for job in container.records()
                    if job.name.endswith(':nap')]
            self.assertEqual(2, len(naps))
            for job in naps:
                attempt, = job.attempts
                self.assertEqual('done', attempt.outcome)
                self.assertLess(attempt.started - job.created, 3)
            self.assertEqual(2, len({job.attempts[0].worker for job in naps}))
            self.assertEqual([1, 1], [c.count for c in client.counters_of()])

    def test_the_embedded_default_of_gocept_runner(self):
        # gocept-runner without zope.conf: a FileStorage var/Data.fs, for
        # one process.  A runner's worker of that process puts a job when
        # the job worker idles.
        program = (
            'import sys\n'
            'from gocept.runner import cli\n'
            'from gocept.runner.jobs import worker\n'
            'import gocept.runner.tests.jobprograms\n'
            f'worker.POLL = {POLL}\n'
            "sys.exit(cli.main(['--max-runtime', '8',"
            " 'gocept.runner.tests.jobprograms:producer',"
            " 'gocept.runner.jobs:work'], exiting=True))\n")
        result = subprocess.run(
            [sys.executable, '-c', program], cwd=self.dir,
            capture_output=True, text=True, timeout=TIMEOUT)
        self.assertEqual(75, result.returncode, result.stderr)
        zodb = (f'<zodb>\n  <filestorage>\n    path {self.dir}/var/Data.fs\n'
                '  </filestorage>\n</zodb>\n')
        with jobprograms.client(zodb) as client:
            job, = client.fresh().records()
            attempt, = job.attempts
            self.assertEqual('done', attempt.outcome)
            self.assertLess(attempt.started - job.created, 3)
            self.assertEqual(1, client.root['counter'].count)
