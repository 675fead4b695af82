"""The heartbeat of worker processes, and the sweep that fails the jobs of
dead ones: in the process of the test, with connections standing for the
processes."""

import contextlib
import logging
import threading
import time
import unittest

import transaction
import ZODB.FileStorage
import ZODB.MappingStorage
from ZODB.POSException import ConflictError

from gocept.runner import testing
from gocept.runner.jobs import liveness
from gocept.runner.jobs import store
from gocept.runner.jobs.record import Job
from gocept.runner.jobs.store import jobs_of


@contextlib.contextmanager
def logged():
    """Yield the list of the lines gocept.runner.jobs logs in the block."""
    lines = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: lines.append(
        f'{record.levelname} {record.getMessage()}')
    logger = logging.getLogger('gocept.runner.jobs')
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class SweepTest(unittest.TestCase):

    def setUp(self):
        self.db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
        self.addCleanup(self.db.close)
        self.sweeper = liveness.Liveness(self.db)
        self.connection = self.db.open()
        self.addCleanup(self.close)
        jobs = jobs_of(self.connection, create=True)
        jobs.dead_after = 10
        transaction.commit()

    def close(self):
        transaction.abort()
        self.connection.close()

    def jobs(self):
        transaction.begin()
        return jobs_of(self.connection)

    def process(self, key, running=None, retries=1):
        """Register the process `key` with a worker; with `running`, a job
        of that name that the worker runs; return the job."""
        jobs = self.jobs()
        process = jobs.processes()[key] = store.ProcessRecord(key)
        worker = process.workers[f'{key}/1'] = store.WorkerRecord(
            f'{key}/1')
        job = None
        if running is not None:
            job = Job(running, 'module:function', retries=retries,
                      retry_pause=0)
            jobs.put(job)
            taken, _ = jobs.take(time.time())
            taken.begin_attempt(worker.key, time.time())
            worker.batch = ((taken, 1),)
        transaction.commit()
        return job

    def sweep(self, seconds_later):
        """Sweep as a process whose heartbeat is `seconds_later` than the
        last commit."""
        own_time = liveness.serial_time(self.jobs().processes()) + (
            seconds_later)
        with logged() as lines:
            self.sweeper._sweep(self.connection, own_time)
        return lines

    def test_the_running_job_of_a_dead_process_is_tried_again(self):
        job = self.process('dead', running='a')
        lines = self.sweep(11)
        jobs = self.jobs()
        self.assertNotIn('dead', jobs.processes())
        job = jobs.get('a')
        self.assertEqual('pending', job.state)
        self.assertEqual(['died'], [a.outcome for a in job.attempts])
        self.assertEqual(1, job.tries)
        self.assertRegex(job.attempts[0].error,
                         r'^its worker process .* pid \d+ died \(no heartbeat'
                         r' for 11 seconds\)$')
        self.assertRegex(lines[0], r'^WARNING Worker process dead \(.* pid'
                         r' \d+\) held dead: no heartbeat for 11 seconds;'
                         r' jobs it ran: module:function a$')
        self.assertRegex(lines[1], r'^INFO Job module:function a failed in'
                         r' attempt 1 of 2 \(died: its worker process')

    def test_after_its_retries_it_fails(self):
        self.process('dead', running='a', retries=0)
        self.sweep(11)
        job = self.jobs().get('a')
        self.assertEqual('failed', job.state)
        self.assertIn(job, list(self.jobs().failed()))

    def test_a_process_that_beat_lately_lives(self):
        self.process('alive', running='a')
        self.assertEqual([], self.sweep(9))
        jobs = self.jobs()
        self.assertIn('alive', jobs.processes())
        self.assertEqual('running', jobs.get('a').state)

    def test_a_take_of_a_process_held_dead_meanwhile_conflicts(self):
        self.process('late')
        jobs = self.jobs()
        jobs.put(Job('b', 'module:function'))
        transaction.commit()
        # The process takes a job, as a worker's first transaction does,
        # while another buries it: the job would run where no sweep finds
        # it, if both committed.
        manager = transaction.TransactionManager()
        late = self.db.open(manager)
        late_jobs = jobs_of(late)
        worker = late_jobs.processes()['late'].workers['late/1']
        job, _ = late_jobs.take(time.time())
        job.begin_attempt(worker.key, time.time())
        worker.batch = ((job, 1),)
        self.sweep(11)
        self.assertNotIn('late', self.jobs().processes())
        with self.assertRaises(ConflictError):
            manager.commit()
        manager.abort()
        late.close()
        self.assertEqual('pending', self.jobs().get('b').state)

    def test_a_process_held_dead_registers_again(self):
        with logged() as lines:
            own = self.sweeper._beat(self.connection)
        self.assertEqual([], lines)
        del self.jobs().processes()[self.sweeper.key]
        transaction.commit()
        with logged() as lines:
            later = self.sweeper._beat(self.connection)
        self.assertIn(self.sweeper.key, self.jobs().processes())
        self.assertGreater(later, own)
        self.assertEqual(
            [f'WARNING Worker process {self.sweeper.key} was held dead by'
             ' others (no heartbeat for 10 seconds); its running jobs run'
             ' elsewhere'], lines)

    def test_done_jobs_are_removed_after_keep_done_seconds(self):
        jobs = self.jobs()
        jobs.keep_done = 60
        for job_id, ended in ('old', time.time() - 61), ('new', time.time()):
            job = Job(job_id, 'module:function')
            jobs.put(job)
            taken, _ = jobs.take(time.time())
            taken.begin_attempt('w', ended)
            jobs.done(taken, ended)
        transaction.commit()
        self.sweep(0)
        jobs = self.jobs()
        self.assertIsNone(jobs.get('old'))
        self.assertEqual('done', jobs.get('new').state)

    def test_done_jobs_are_removed_about_every_EXPIRE_seconds(self):
        def done(job_id):
            jobs = self.jobs()
            jobs.keep_done = 60
            jobs.put(Job(job_id, 'module:function'))
            taken, _ = jobs.take(time.time())
            taken.begin_attempt('w', time.time() - 61)
            jobs.done(taken, time.time() - 61)
            transaction.commit()
        done('first')
        self.sweep(0)
        started = time.monotonic()
        self.assertIsNone(self.jobs().get('first'))
        done('second')
        self.sweep(0)
        self.assertEqual('done', self.jobs().get('second').state)
        self.assertGreaterEqual(self.sweeper._expire_at,
                                started + liveness.EXPIRE / 2 - 1)
        self.assertLessEqual(self.sweeper._expire_at,
                             started + liveness.EXPIRE * 3 / 2)
        # As if the time had come.
        self.sweeper._expire_at = time.monotonic()
        self.sweep(0)
        self.assertIsNone(self.jobs().get('second'))


class HeldCommit:
    """A synchronizer that holds the first commit of its thread until
    `barrier` has all its parties."""

    def __init__(self, barrier):
        self.barrier = barrier
        self.held = False

    def beforeCompletion(self, txn):
        if not self.held:
            self.held = True
            self.barrier.wait(10)

    def afterCompletion(self, txn):
        pass

    def newTransaction(self, txn):
        pass


class StopTogetherTest(unittest.TestCase):
    """Processes stopped at once remove their records from one tree at
    once, on a FileStorage, which resolves the conflicts it can."""

    PROCESSES = 6

    def setUp(self):
        self.db = testing.file_storage_db(self)

    def test_processes_stopped_together_all_unregister(self):
        processes = [liveness.Liveness(self.db)
                     for _ in range(self.PROCESSES)]
        connection = self.db.open()
        for process in processes:
            process._beat(connection)
        connection.close()
        barrier = threading.Barrier(self.PROCESSES)
        errors = []

        def stop(process):
            transaction.manager.registerSynch(HeldCommit(barrier))
            connection = self.db.open()
            try:
                process._unregister(connection)
            except Exception as e:
                errors.append(e)
            finally:
                transaction.abort()
                connection.close()

        threads = [threading.Thread(target=stop, args=(process,))
                   for process in processes]
        with logged() as lines:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        self.assertEqual([], errors)
        self.assertEqual([], lines)
        connection = self.db.open()
        self.addCleanup(connection.close)
        self.assertEqual([], list(jobs_of(connection).processes()))
