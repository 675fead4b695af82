"""Job workers as real processes on a FileStorage, a ZEO server and a
PostgreSQL server (RelStorage): each job's effects commit once, failures
are retried and recorded, dead workers and run-away jobs are dealt with.

The test puts the jobs through a client of the database of its own and
looks at the records and the jobs' effects there; on a FileStorage, which
one process at a time may open, only while no worker runs.
"""

import collections
import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

import transaction

from gocept.runner import jobs
from gocept.runner import status
from gocept.runner import testing
from gocept.runner.jobs import store
from gocept.runner.jobs.record import Job
from gocept.runner.jobs.worker import BATCH
from gocept.runner.tests import jobprograms


# Seconds a test waits for its workers, at most.
TIMEOUT = 120
JOBS = 2000
# Seconds after which a silent worker process is held dead: short, but
# not so short that a busy machine makes a live one seem dead.
DEAD_AFTER = 3


class Scenarios:
    """What every storage must do; a subclass says which storage."""

    # Whether the test may look at the database while workers run, and
    # whether several processes may share it.
    shared = True
    # How many jobs the workers drain (in threads, and in two processes
    # where they may share the database: 8 workers).
    jobs = JOBS

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='gocept.runner.jobs.')
        self.addCleanup(shutil.rmtree, self.dir)
        self.processes = []
        self.addCleanup(self.kill_processes)
        jobprograms.write_zope_conf(self.dir, self.zodb_section())
        # A fresh container: the server may have others' jobs.
        with self.client() as client:
            transaction.begin()
            client.root[store.ROOT_KEY] = store.Jobs()
            transaction.commit()

    def kill_processes(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    @contextlib.contextmanager
    def client(self):
        with jobprograms.client(self.zodb_section()) as c:
            yield c

    def start(self, **settings):
        process = jobprograms.start(self.dir, **settings)
        self.processes.append(process)
        return process

    def run_workers(self, processes=1, **settings):
        """Run `processes` burst worker processes until they end; return
        their exit statuses."""
        running = [self.start(burst=1, **settings)
                   for _ in range(processes)]
        return [self.wait(process) for process in running]

    def wait(self, process, timeout=TIMEOUT):
        try:
            return process.wait(timeout)
        except Exception:
            raise AssertionError(
                f'Worker still running after {timeout} s:\n{self.output()}')

    def output(self):
        return jobprograms.output(self.dir)

    def lines(self, level):
        return [line for line in self.output().splitlines()
                if line.startswith(f'{level} gocept.runner.jobs ')]

    def put(self, client, function, count, **options):
        """Put `count` jobs of `function` with a Counter each; commit;
        return the Counters and the ids."""
        counters = client.counters(count)
        ids = [function.apply_async((counter,), **options)
               for counter in counters]
        transaction.commit()
        return counters, ids

    def assert_done_once(self, client, ids, counters, failed=(),
                         besides=('conflict',)):
        """Every job is done, in one attempt, besides attempts that ended
        as `besides` says (a conflict), and its effect is there once; the
        jobs `failed` failed."""
        container = client.fresh()
        self.assertEqual(len(ids), len(set(ids)))
        for job_id, counter in zip(ids, counters):
            job = container.get(job_id)
            self.assertEqual('done', job.state, [
                (a.outcome, a.error, a.worker) for a in job.attempts])
            outcomes = [attempt.outcome for attempt in job.attempts]
            self.assertEqual(['done'], [
                outcome for outcome in outcomes if outcome not in besides])
            self.assertEqual(1, counter.count, job)
        self.assertEqual(0, len(container))
        self.assertEqual(sorted(failed),
                         sorted(job.id for job in container.failed()))
        self.assertEqual([], list(container.running()))

    def test_jobs_are_done_each_once_by_workers_in_threads_and_processes(
            self):
        processes = 2 if self.shared else 1
        with self.client() as client:
            counters, ids = self.put(client, jobprograms.mark, self.jobs)
        self.assertEqual([0] * processes,
                         self.run_workers(processes, workers=4))
        with self.client() as client:
            self.assert_done_once(client, ids, client.counters_of())
        self.assertEqual([], self.lines('WARNING') + self.lines('ERROR'),
                         self.output())

    def test_jobs_run_together_while_they_are_due(self):
        # While jobs are due, the first is taken on its own, the commit of
        # its run takes the next jobs (up to BATCH), which the next run runs
        # together, in one transaction; after that, a transaction of its
        # own takes the next.
        with self.client() as client:
            since = client.db.lastTransaction()
            counters, ids = self.put(client, jobprograms.mark, 20)
        self.assertEqual([0], self.run_workers())
        with self.client() as client:
            self.assert_done_once(client, ids, client.counters_of())
            notes = client.notes(since, ids)
        runs = [note for note in notes if ' run job ' in note]
        self.assertEqual(20, sum(note.count(' run job ') for note in runs))
        self.assertEqual(20, sum(note.count(' take job ') for note in notes))
        self.assertLessEqual(1 + math.ceil(19 / BATCH), len(runs))
        self.assertLess(len(runs), 20, notes)
        self.assertLessEqual(len(notes), 2 * len(runs) + 1, notes)

    def test_a_job_that_fails_among_others_fails_alone(self):
        # Due jobs run together in one transaction; when one of them
        # raises, the transaction keeps nothing, and each runs again on its
        # own: the others are done once, the failing one fails alone.
        # After it, enough jobs that a run of several commits, though the
        # failing one (as fast as its retries come) may be in three runs.
        marks = 6 + 3 * BATCH
        with self.client() as client:
            since = client.db.lastTransaction()
            counters = client.counters(marks)
            ids = [jobprograms.mark.delay(counter)
                   for counter in counters[:6]]
            failing = jobprograms.fail.delay('y')
            ids += [jobprograms.mark.delay(counter)
                    for counter in counters[6:]]
            transaction.commit()
        self.assertEqual([0], self.run_workers())
        with self.client() as client:
            self.assert_done_once(client, ids, client.counters_of(),
                                  failed=[failing])
            job = client.record(failing)
            self.assertEqual(['error'] * 3,
                             [attempt.outcome for attempt in job.attempts])
            notes = client.notes(since, ids)
        # Jobs ran together, and each mark's run committed once.
        self.assertTrue(any(note.count(' run job ') > 1 for note in notes),
                        notes)
        self.assertEqual(marks, sum(
            note.count(' run job gocept.runner.tests.jobprograms:mark ')
            for note in notes), notes)

    def test_a_job_taken_but_not_begun_is_given_back_when_its_loop_ends(
            self):
        with self.client() as client:
            since = client.db.lastTransaction()
            counters, ids = self.put(client, jobprograms.mark, 3)
        # One tick: it takes a job, runs it and takes the next two, which
        # it does not begin.  (A limit reached: start me again.)
        self.assertEqual(status.EX_TEMPFAIL,
                         self.wait(self.start(max_ticks=1)))
        with self.client() as client:
            container = client.fresh()
            records = [container.get(job_id) for job_id in ids]
            notes = client.notes(since, ids)
            given_back = [job for job in records
                          if f'take job {job.describe()}' in notes[1]]
            self.assertEqual(2, len(given_back), notes)
            self.assertEqual(['done', 'pending', 'pending'],
                             sorted(job.state for job in records))
            for job in records:
                self.assertEqual(
                    1 if job.state == 'done' else 0, len(job.attempts))
            self.assertEqual(2, len(container))
            self.assertEqual([], list(container.running()))
            self.assertEqual([], [
                worker for process in container.processes().values()
                for worker in process.workers.values()])
        self.assertEqual([0], self.run_workers())
        with self.client() as client:
            self.assert_done_once(client, ids, client.counters_of())

    def test_a_job_put_in_a_transaction_that_aborted_never_runs(self):
        with self.client() as client:
            aborted, committed = client.counters(2)
            transaction.commit()
            aborted_id = jobprograms.mark.delay(aborted)
            transaction.abort()
            committed_id = jobprograms.mark.delay(committed)
            transaction.commit()
        self.assertEqual([0], self.run_workers())
        with self.client() as client:
            self.assertIsNone(jobs.status(aborted_id))
            self.assertEqual('done', jobs.status(committed_id))
            aborted, committed = client.counters_of()
            self.assertEqual((0, 1), (aborted.count, committed.count))
            self.assertEqual(1, len(client.fresh()._records))

    def test_a_record_naming_anything_but_a_job_function_is_refused(self):
        marker = os.path.join(self.dir, 'called')
        with self.client() as client:
            counter, = client.counters(1)
            container = client.jobs()
            undecorated = Job(uuid.uuid4().hex,
                              'gocept.runner.tests.jobprograms:not_a_job',
                              (counter,))
            elsewhere = Job(uuid.uuid4().hex, 'os:system',
                            (f'touch {marker}',))
            container.put(undecorated)
            container.put(elsewhere)
            transaction.commit()
        self.assertEqual([0], self.run_workers())
        with self.client() as client:
            container = client.fresh()
            for job in container.get(undecorated.id), container.get(
                    elsewhere.id):
                self.assertEqual('failed', job.state)
                self.assertIn(job, list(container.failed()))
                attempt, = job.attempts
                self.assertEqual('refused', attempt.outcome)
            self.assertEqual(0, client.counters_of()[0].count)
        self.assertFalse(os.path.exists(marker))
        self.assertEqual(sorted([
            f'ERROR gocept.runner.jobs Job {name} {job_id} refused: no job'
            f' function {name} is registered (only functions decorated with'
            ' gocept.runner.jobs.job run); kept among the failed jobs'
            for name, job_id in [
                ('gocept.runner.tests.jobprograms:not_a_job', undecorated.id),
                ('os:system', elsewhere.id)]]),
            sorted(self.lines('ERROR')))

    def test_a_failing_job_is_retried_with_growing_pauses_then_failed(self):
        with self.client() as client:
            job_id = jobprograms.fail.delay('x')
            transaction.commit()
        self.assertEqual([0], self.run_workers())
        name = f'gocept.runner.tests.jobprograms:fail {job_id}'
        with self.client() as client:
            job = client.record(job_id)
            self.assertEqual('failed', job.state)
            self.assertIn(job, list(client.jobs().failed()))
            self.assertEqual(['error'] * 3,
                             [attempt.outcome for attempt in job.attempts])
            for attempt in job.attempts:
                self.assertEqual('ValueError: boom x', attempt.error)
                self.assertIn("raise ValueError(f'boom {token}')",
                              attempt.traceback)
                self.assertRegex(attempt.transaction, r'^0x[0-9a-f]{16}$')
            pauses = [after.started - before.ended for before, after in zip(
                job.attempts, job.attempts[1:])]
            # Half the ceiling at least, and seldom more than a poll late.
            self.assertTrue(0.15 <= pauses[0] <= 0.3 + 1, pauses)
            self.assertTrue(0.3 <= pauses[1] <= 0.6 + 1, pauses)
        self.assertEqual(2, len(self.lines('INFO')), self.output())
        for number, line in enumerate(self.lines('INFO'), 1):
            self.assertRegex(line, re.escape(
                f'INFO gocept.runner.jobs Job {name} failed in attempt'
                f' {number} of 3 (error: ValueError: boom x); trying again'
                ' in ') + r'\d+\.\d seconds$')
        self.assertEqual([
            f'ERROR gocept.runner.jobs Job {name} failed for good after 3'
            ' attempts (error: ValueError: boom x); kept among the failed'
            ' jobs'], self.lines('ERROR'))

    def gocept_jobs(self, *argv):
        """Run ``gocept-jobs COMMAND -C zope.conf ARGS`` (`argv`), its log
        to the file ``commands.log``; return its exit status and the lines
        it printed."""
        command, *rest = argv
        with open(os.path.join(self.dir, 'zope.conf')) as f:
            conf = f.read().replace(
                'path STDOUT', f'path {self.dir}/commands.log')
        with open(os.path.join(self.dir, 'commands.conf'), 'w') as f:
            f.write(conf)
        result = subprocess.run(
            [sys.executable, '-m', 'gocept.runner.jobs', command, '-C',
             os.path.join(self.dir, 'commands.conf'), *rest],
            capture_output=True, text=True, timeout=TIMEOUT)
        self.assertEqual('', result.stderr)
        return result.returncode, result.stdout.splitlines()

    def test_gocept_jobs_retry_brings_a_failed_job_back(self):
        name = 'gocept.runner.tests.jobprograms:mark_when_allowed'
        with self.client() as client:
            (counter,), (job_id,) = self.put(
                client, jobprograms.mark_when_allowed, 1)
            other = jobprograms.mark.delay(client.counters(1, 'other')[0])
            transaction.commit()
        # Its worker fails it after its one retry; the other job is done.
        self.assertEqual([0], self.run_workers())
        code, lines = self.gocept_jobs('list', '--done')
        self.assertEqual((0, [other]), (code, [line.split()[0]
                                               for line in lines]))
        code, lines = self.gocept_jobs('list', '--failed')
        self.assertEqual(0, code)
        line, = lines
        self.assertRegex(line, rf'^{job_id}  failed     2  .*  {name}'
                               '  ValueError: not allowed yet$')
        code, lines = self.gocept_jobs('show', job_id)
        self.assertEqual('Status: failed', lines[2])
        self.assertEqual(2, sum(line.startswith('Attempt ')
                                for line in lines))
        # Each traceback begins in the job's function: the worker's frames
        # say nothing to its reader.
        starts = [lines[number + 1] for number, line in enumerate(lines)
                  if line == '  Traceback (most recent call last):']
        self.assertEqual(2, len(starts))
        for start in starts:
            self.assertRegex(start, r'^    File ".*jobprograms\.py", line'
                                    r' \d+, in mark_when_allowed$')
        self.assertIn("      raise ValueError('not allowed yet')", lines)
        with self.client() as client:
            client.counters_of()[0].allowed = True
            transaction.commit()
        self.assertEqual((0, ['retried 1 failed job']),
                         self.gocept_jobs('retry', job_id))
        # gocept-jobs work runs it (in two workers, until none is left).
        code, lines = self.gocept_jobs(
            'work', '--workers', '2', '--burst', '--import',
            'gocept.runner.tests.jobprograms')
        self.assertEqual(0, code, self.output())
        with self.client() as client:
            job = client.record(job_id)
            self.assertEqual('done', job.state)
            self.assertEqual(['error', 'error', 'done'],
                             [attempt.outcome for attempt in job.attempts])
            self.assertEqual(1, client.counters_of()[0].count)
            self.assertEqual([], list(client.jobs().failed()))
        code, lines = self.gocept_jobs('show', job_id)
        self.assertEqual('Status: done', lines[2])
        self.assertIn('Result: None', lines)
        self.assertEqual((0, ['purged 0 failed jobs']),
                         self.gocept_jobs('purge', '--failed'))

    def test_a_job_that_kills_its_process_fails_after_its_retries(self):
        with self.client() as client:
            client.set(dead_after=DEAD_AFTER)
            killer, = client.counters(1, name='killer')
            transaction.commit()
            killer_id = jobprograms.kill_process.delay(killer)
            counters, ids = self.put(client, jobprograms.slow_mark, 40)
        # The test is the supervisor: it starts a worker again when one
        # dies, until all are done.
        count = 2 if self.shared else 1
        workers = [self.start(burst=1) for _ in range(count)]
        deaths = 0
        deadline = time.monotonic() + TIMEOUT
        while any(worker.poll() != 0 for worker in workers):
            self.assertLess(time.monotonic(), deadline, self.output())
            for number, worker in enumerate(workers):
                if worker.poll() == -signal.SIGKILL:
                    deaths += 1
                    workers[number] = self.start(burst=1)
                else:
                    self.assertIn(worker.poll(), (None, 0), self.output())
            time.sleep(0.05)
        with self.client() as client:
            job = client.record(killer_id)
            self.assertEqual('failed', job.state)
            # Its retry and the attempt before: run alone.  Killed in a
            # batch of several jobs first, it ran alone after that.
            outcomes = [attempt.outcome for attempt in job.attempts]
            self.assertEqual(['died', 'died'], outcomes[-2:])
            self.assertLessEqual(set(outcomes[:-2]), {'died in a batch'})
            self.assertEqual(len(outcomes), deaths, self.output())
            self.assertRegex(
                job.attempts[-1].error, r'^its worker process .* pid \d+'
                r' died \(no heartbeat for \d+ seconds\)$')
            # What it changed before it died was never stored.
            self.assertEqual(0, client.root['killer'][0].count)
            # A job killed with the killer in a batch ran again.
            self.assert_done_once(client, ids, client.counters_of(),
                                  failed=[killer_id],
                                  besides=('conflict', 'died in a batch'))
        self.assertEqual(1, len(self.lines('ERROR')), self.output())
        self.assertIn(f'Job gocept.runner.tests.jobprograms:kill_process'
                      f' {killer_id} failed for good after 2 attempts (died:'
                      ' its worker process ', self.lines('ERROR')[0])

    def test_a_job_past_its_time_limit_is_aborted(self):
        for workers in 1, 2:  # in the main thread, in threads
            with self.client() as client:
                counter, other = client.counters(2)
                transaction.commit()
                job_id = jobprograms.run_away.delay(counter)
                other_id = jobprograms.mark.delay(other)
                transaction.commit()
            started = time.monotonic()
            self.assertEqual([0], self.run_workers(workers=workers))
            self.assertLess(time.monotonic() - started, 20)
            with self.client() as client:
                job = client.record(job_id)
                self.assertEqual('failed', job.state)
                attempt, = job.attempts
                self.assertEqual('time limit', attempt.outcome)
                self.assertEqual('ran past its time limit of 0.5 seconds',
                                 attempt.error)
                self.assertIn('TimeLimitExceeded', attempt.traceback)
                self.assertEqual((0, 1), tuple(
                    counter.count for counter in client.counters_of()))
                self.assertEqual('done', jobs.status(other_id))

    def test_a_delayed_job_is_taken_within_a_second_of_its_time(self):
        with self.client() as client:
            counters, ids = self.put(client, jobprograms.mark, 2,
                                     countdown=2)
            for job_id in ids:
                self.assertEqual('delayed', jobs.status(job_id))
        worker = self.start(burst=1)
        # When its first tick has ended, the worker is up: on a busy
        # machine that may be after the jobs' time.
        deadline = time.monotonic() + TIMEOUT
        while 'Tick 1 of worker' not in self.output():
            self.assertLess(time.monotonic(), deadline, self.output())
            time.sleep(0.05)
        up = time.time()
        self.assertEqual(0, self.wait(worker))
        with self.client() as client:
            container = client.fresh()
            for job_id in ids:
                job = container.get(job_id)
                attempt, = job.attempts
                self.assertGreaterEqual(attempt.started, job.eta)
                self.assertLess(attempt.started, max(job.eta, up) + 1)

    def test_sigint_interrupts_a_job_in_the_main_thread(self):
        job_id = self.put_long_run()
        worker = self.start()
        deadline = time.monotonic() + TIMEOUT
        while f'{job_id}: attempt 1 started' not in self.output():
            self.assertLess(time.monotonic(), deadline, self.output())
            time.sleep(0.05)
        started = time.monotonic()
        worker.send_signal(signal.SIGINT)
        self.assertGreaterEqual(self.wait(worker), 0)
        self.assertLess(time.monotonic() - started, 10)
        self.assertInterruptedAndQueuedAgain(job_id)

    def put_long_run(self):
        """Put a job that changes a counter, then computes for 30 s;
        return its id."""
        with self.client() as client:
            counter, = client.counters(1)
            job_id = jobprograms.long_run.delay(counter)
            transaction.commit()
        return job_id

    def assertInterruptedAndQueuedAgain(self, job_id):
        """The job `job_id` (long_run) was interrupted, its change not
        stored, and is queued again at once, its attempt not counted: not
        the job's fault."""
        with self.client() as client:
            job = client.record(job_id)
            self.assertEqual('pending', job.state)
            self.assertEqual(['interrupted'],
                             [attempt.outcome for attempt in job.attempts])
            self.assertEqual(0, job.tries)
            self.assertEqual(0, client.counters_of()[0].count)

    def test_sigint_between_the_take_and_the_call_interrupts_the_job(self):
        # The SIGINT comes when the take has committed, before the job's
        # function is called: the job does not run, and is queued again.
        job_id = self.put_long_run()
        started = time.monotonic()
        worker = self.start(sigint_after_take=1)
        self.assertGreaterEqual(self.wait(worker), 0)
        self.assertLess(time.monotonic() - started, 30, self.output())
        self.assertInterruptedAndQueuedAgain(job_id)

    def test_status_while_workers_run(self):
        if not self.shared:
            self.skipTest('One process at a time opens a FileStorage')
        worker = self.start()
        with self.client() as client:
            job_id = jobprograms.add.apply_async((2,), {'b': 3},
                                                 countdown=1)
            transaction.commit()
            self.assertEqual('delayed', jobs.status(job_id))
            client.wait(lambda: jobs.status(job_id) == 'done', 30)
            self.assertEqual(5, jobs.result(job_id))
        worker.send_signal(signal.SIGTERM)
        self.assertEqual(0, self.wait(worker))

    def test_sigterm_loses_no_job(self):
        count = 2 if self.shared else 1
        with self.client() as client:
            counters, ids = self.put(client, jobprograms.slow_mark, 300)
        workers = [self.start(workers=2) for _ in range(count)]
        # Until some are done, many not yet.
        deadline = time.monotonic() + TIMEOUT
        while self.output().count(' done in ') < 20:
            self.assertLess(time.monotonic(), deadline, self.output())
            time.sleep(0.05)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        self.assertEqual([0] * count, [self.wait(w) for w in workers])
        with self.client() as client:
            container = client.fresh()
            self.assertEqual([], list(container.running()))
            states = collections.Counter()
            for job_id, counter in zip(ids, client.counters_of()):
                state = container.get(job_id).state
                states[state] += 1
                self.assertEqual(1 if state == 'done' else 0, counter.count)
            self.assertEqual({'done', 'pending'}, set(states), states)
        self.assertEqual([0], self.run_workers(workers=2))
        with self.client() as client:
            self.assert_done_once(client, ids, client.counters_of())


class FileStorageTest(Scenarios, unittest.TestCase):

    layer = testing.JobsLayer
    shared = False

    def zodb_section(self):
        return (f'<zodb>\n  <filestorage>\n    path {self.dir}/Data.fs\n'
                '  </filestorage>\n</zodb>\n')


class ZEOTest(Scenarios, unittest.TestCase):

    layer = testing.ZEO_LAYER
    # 5,000 jobs for 8 workers here; the others drain fewer, for the
    # suite's time.
    jobs = 5000

    def zodb_section(self):
        return self.layer.server.zodb_section()


class RelStorageTest(Scenarios, unittest.TestCase):

    layer = testing.POSTGRESQL_LAYER

    def setUp(self):
        if self.layer.server is None:
            self.skipTest(self.layer.missing)
        self.dbname = f'jobs_{uuid.uuid4().hex}'
        self.layer.server.create_database(self.dbname)
        self.addCleanup(self.layer.server.drop_database, self.dbname)
        super().setUp()

    def zodb_section(self):
        return self.layer.server.zodb_section(self.dbname)
