"""Prometheus metrics of jobs: what a worker process's workers did, by job
name, and the queue of its database; scraped over HTTP from real worker
processes (gocept-jobs work, gocept-runner gocept.runner.jobs:work) on a
FileStorage and a ZEO server, and their pure parts on their own."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

import transaction

import gocept.runner.metrics
from gocept.runner import testing
from gocept.runner.jobs import attempts
from gocept.runner.jobs import counts
from gocept.runner.jobs import metrics
from gocept.runner.jobs import store
from gocept.runner.jobs.record import Job
from gocept.runner.tests import jobprograms
from gocept.runner.tests.test_metrics import parse
from gocept.runner.tests.test_metrics import scrape
from gocept.runner.tests.test_metrics import value


MARK = 'gocept.runner.tests.jobprograms:mark'
SLOW = 'gocept.runner.tests.jobprograms:slow_mark'
FAIL = 'gocept.runner.tests.jobprograms:fail'
WHEN_ALLOWED = 'gocept.runner.tests.jobprograms:mark_when_allowed'
LONG = 'gocept.runner.tests.jobprograms:long_run'
# The job modules of the workers, as an operator names them.
PRODUCT_CONFIG = """\
<product-config gocept.runner.jobs>
  modules gocept.runner.tests.jobprograms
</product-config>
"""
TIMEOUT = 120


def job(name, eta=None):
    return Job(uuid.uuid4().hex, name, eta=eta)


class CountsTest(unittest.TestCase):
    """What a thread counts: plain numbers by job name."""

    def ending(self, name, outcome, what):
        record = job(name)
        record.begin_attempt('w', 0)
        record.end_attempt(outcome, 1)
        return attempts.Ending(record, record.attempts[-1], what)

    def test_done_retried_failed_and_attempts_by_outcome(self):
        tally = counts.Counts()
        tally.done('a:f', 0.002)
        tally.done('a:f', 7)
        tally.ended(self.ending('a:f', 'error', 'retry'), 0.5)
        tally.ended(self.ending('a:f', 'time limit', 'failed'), 2)
        tally.ended(self.ending('a:g', 'died', 'failed'))
        tally.ended(self.ending('a:g', 'conflict', 'queued'), 0.01)
        f, g = tally.names['a:f'], tally.names['a:g']
        self.assertEqual((2, 1, 1), (f.done, f.retried, f.failed))
        self.assertEqual((0, 0, 1), (g.done, g.retried, g.failed))
        self.assertEqual({'done': 2, 'error': 1, 'time limit': 1},
                         {k: v for k, v in f.attempts.items() if v})
        self.assertEqual({'died': 1, 'conflict': 1},
                         {k: v for k, v in g.attempts.items() if v})
        # The run times: a died attempt did not run here.
        self.assertEqual(4, sum(f.durations))
        self.assertEqual(1, sum(g.durations))
        self.assertAlmostEqual(9.502, f.duration_sum)
        self.assertEqual(1, f.durations[counts.BUCKETS.index(0.0025)])
        self.assertEqual(1, f.durations[counts.BUCKETS.index(10)])

    def test_the_buckets_are_those_of_a_tick(self):
        self.assertEqual(gocept.runner.metrics.BUCKETS, counts.BUCKETS)


class DepthTest(unittest.TestCase):
    """Jobs.depth: the queue by state, read from its BTrees."""

    def test_an_empty_queue(self):
        self.assertEqual(store.Depth(0, 0, 0, 0, None),
                         store.Jobs().depth(time.time()))

    def test_pending_delayed_failed_and_the_earliest(self):
        jobs = store.Jobs(shards=3)
        now = 1_800_000_000
        # Some hundred in each shard: several buckets, the bound between
        # due and delayed in the middle of one.
        for number in range(600):
            jobs.put(job('a:f', now - 1000 + number * 2))
        for eta in (now + 0.000001, now + 60):
            jobs.put(job('a:f', eta))
        depth = jobs.depth(now)
        # 0 to 500: due at now.
        self.assertEqual((501, 99 + 2, 0, 0, now - 1000), depth)
        self.assertEqual(len(jobs), depth.pending + depth.delayed)
        taken, _ = jobs.take(now)
        jobs.fail(taken)
        self.assertEqual((500, 101, 0, 1), jobs.depth(now)[:4])
        # The earliest left is that of a shard that lost its first.
        self.assertEqual(
            min(j.eta for j in jobs.records() if j.key is not None),
            jobs.depth(now).earliest)

    def test_nothing_due_yet(self):
        jobs = store.Jobs(shards=2)
        jobs.put(job('a:f', 2_000_000_060))
        self.assertEqual(store.Depth(0, 1, 0, 0, 2_000_000_060),
                         jobs.depth(2_000_000_000))


class CollectorTest(unittest.TestCase):
    """The families of the jobs' figures, exposed as Prometheus reads
    them."""

    def exposition(self, collector):
        registry = gocept.runner.metrics.prometheus_client.CollectorRegistry()
        registry.register(collector)
        return parse(gocept.runner.metrics.prometheus_client.generate_latest(
            registry).decode())

    def test_counts_of_every_thread_are_summed_by_job_name(self):
        collector = metrics.Collector()
        first, second = counts.Counts(), counts.Counts()
        collector.add(first)
        collector.add(second)
        collector.add(first)  # once
        first.done('a:f', 0.003)
        second.done('a:f', 0.2)
        second.done('a:g', 40)
        record = job('a:f')
        record.begin_attempt('w', 0)
        record.end_attempt('time limit', 1)
        second.ended(attempts.Ending(record, record.attempts[0], 'failed'), 1)
        samples = self.exposition(collector)
        self.assertEqual(2, value(samples, 'gocept_runner_job_done_total',
                                  job_name='a:f'))
        self.assertEqual(1, value(samples, 'gocept_runner_job_failed_total',
                                  job_name='a:f'))
        self.assertEqual(0, value(samples, 'gocept_runner_job_retried_total',
                                  job_name='a:f'))
        self.assertEqual(1, value(samples, 'gocept_runner_job_attempts_total',
                                  job_name='a:f', outcome='time_limit'))
        self.assertEqual(2, value(samples, 'gocept_runner_job_attempts_total',
                                  job_name='a:f', outcome='done'))
        self.assertEqual(1, value(samples, 'gocept_runner_job_done_total',
                                  job_name='a:g'))
        histogram = 'gocept_runner_job_duration_seconds'
        self.assertEqual(3, value(samples, f'{histogram}_count',
                                  job_name='a:f'))
        self.assertEqual(1, value(samples, f'{histogram}_bucket',
                                  job_name='a:f', le='0.005'))
        self.assertEqual(2, value(samples, f'{histogram}_bucket',
                                  job_name='a:f', le='0.25'))
        self.assertEqual(3, value(samples, f'{histogram}_bucket',
                                  job_name='a:f', le='1.0'))
        self.assertAlmostEqual(1.203, value(samples, f'{histogram}_sum',
                                            job_name='a:f'))
        self.assertEqual(0, value(samples, f'{histogram}_bucket',
                                  job_name='a:g', le='30.0'))
        self.assertEqual(1, value(samples, f'{histogram}_bucket',
                                  job_name='a:g', le='60.0'))
        # The queue has not been read yet: no samples of it.
        self.assertFalse([key for key in samples if 'queue' in key[0]])
        self.assertIsNone(value(
            samples, 'gocept_runner_job_oldest_pending_age_seconds'))

    def test_the_queue_as_last_read_and_the_age_at_the_scrape(self):
        collector = metrics.Collector()
        now = time.time()
        collector.queue.state = (store.Depth(3, 2, 1, 4, now - 100), now - 2)
        samples = self.exposition(collector)
        self.assertEqual(
            {'pending': 3, 'delayed': 2, 'running': 1, 'failed': 4},
            {state: value(samples, 'gocept_runner_job_queue_depth',
                          state=state) for state in metrics.STATES})
        self.assertEqual(now - 2, value(
            samples, 'gocept_runner_job_queue_read_timestamp_seconds'))
        # Told at the scrape, from when the job became due.
        age = value(samples, 'gocept_runner_job_oldest_pending_age_seconds')
        self.assertGreaterEqual(age, 100)
        self.assertLess(age, 100 + 60)
        # Nothing pending, or nothing due yet: 0.
        for earliest in (None, now + 60):
            collector.queue.state = (store.Depth(0, 1, 0, 0, earliest), now)
            self.assertEqual(0, value(
                self.exposition(collector),
                'gocept_runner_job_oldest_pending_age_seconds'))

    def test_described_without_samples(self):
        names = [family.name for family in metrics.Collector().describe()]
        self.assertEqual([
            'gocept_runner_job_done', 'gocept_runner_job_retried',
            'gocept_runner_job_failed', 'gocept_runner_job_attempts',
            'gocept_runner_job_duration_seconds',
            'gocept_runner_job_queue_depth',
            'gocept_runner_job_oldest_pending_age_seconds',
            'gocept_runner_job_queue_read_timestamp_seconds'], names)


class WorkerProcess:
    """A worker process on the zope.conf of `directory`, serving metrics on
    a free port: ``gocept-jobs work`` or ``gocept-runner``."""

    def __init__(self, directory, command, *args):
        self.directory = directory
        self.port = testing.free_port()
        conf = os.path.join(directory, 'zope.conf')
        argv = {
            'gocept-jobs': ['-m', 'gocept.runner.jobs', 'work', '-C', conf],
            'gocept-runner': ['-m', 'gocept.runner', '-C', conf],
        }[command]
        with open(os.path.join(directory, 'output'), 'ab') as output:
            self.process = subprocess.Popen(
                [sys.executable, *argv, '--metrics', str(self.port), *args],
                stdout=output, stderr=output)

    def output(self):
        return jobprograms.output(self.directory)

    def scrape(self, condition, timeout=TIMEOUT):
        """Scrape until the samples meet `condition`; return them."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                samples = scrape(self.port)
            except OSError:  # not serving yet
                samples = None
            if samples is not None and condition(samples):
                return samples
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(
                    f'No such scrape; last: {samples}\n{self.output()}')
            time.sleep(0.1)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(TIMEOUT)

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def total(samples, name, **labels):
    """The sum of the samples `name` with `labels` (of any others)."""
    wanted = set(labels.items())
    return sum(number for (key, found), number in samples.items()
               if key == name and wanted <= set(found))


class Workers:

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='gocept.runner.jobs.')
        self.addCleanup(shutil.rmtree, self.dir)
        jobprograms.write_zope_conf(self.dir, self.zodb_section(),
                                    extra=PRODUCT_CONFIG)
        with self.client() as client:
            transaction.begin()
            client.root[store.ROOT_KEY] = store.Jobs()
            transaction.commit()

    def client(self):
        return jobprograms.client(self.zodb_section())

    def start(self, command, *args):
        worker = WorkerProcess(self.dir, command, *args)
        self.addCleanup(worker.kill)
        return worker


class FileStorageTest(Workers, unittest.TestCase):

    layer = testing.JobsLayer

    def zodb_section(self):
        return (f'<zodb>\n  <filestorage>\n    path {self.dir}/Data.fs\n'
                '  </filestorage>\n</zodb>\n')

    def test_done_failed_retried_attempts_and_run_times(self):
        with self.client() as client:
            marks = client.counters(3)
            for counter in marks:
                jobprograms.mark.delay(counter)
            slow = client.counters(2, 'slow')
            for counter in slow:
                jobprograms.slow_mark.delay(counter, 0.3)
            jobprograms.fail.delay('x')
            jobprograms.mark_when_allowed.delay(client.counters(1, 'no')[0])
            client.jobs().put(job('os:system'))
            # Its heartbeat reads the queue every half second.
            client.jobs().dead_after = 2
            transaction.commit()
        worker = self.start('gocept-jobs', '--workers', '2')

        def settled(samples):
            return total(samples, 'gocept_runner_job_failed_total') == 3
        samples = worker.scrape(settled)
        self.assertEqual(0, worker.stop())

        def figure(name, job_name, **labels):
            return value(samples, f'gocept_runner_job_{name}',
                         job_name=job_name, **labels)
        self.assertEqual((3, 0, 0), tuple(
            figure(f'{name}_total', MARK)
            for name in ('done', 'retried', 'failed')))
        self.assertEqual((2, 0, 0), tuple(
            figure(f'{name}_total', SLOW)
            for name in ('done', 'retried', 'failed')))
        # fail: retries=2; mark_when_allowed: retries=1.
        self.assertEqual((0, 2, 1), tuple(
            figure(f'{name}_total', FAIL)
            for name in ('done', 'retried', 'failed')))
        self.assertEqual((0, 1, 1), tuple(
            figure(f'{name}_total', WHEN_ALLOWED)
            for name in ('done', 'retried', 'failed')))
        self.assertEqual(1, figure('failed_total', 'os:system'))
        # A job function that did not run has its series from the start.
        self.assertEqual((0, 0, 0), tuple(
            figure(f'{name}_total', 'gocept.runner.tests.jobprograms:add')
            for name in ('done', 'retried', 'failed')))
        self.assertEqual(3, figure('attempts_total', MARK, outcome='done'))
        self.assertEqual(3, figure('attempts_total', FAIL, outcome='error'))
        self.assertEqual(2, figure('attempts_total', WHEN_ALLOWED,
                                   outcome='error'))
        self.assertEqual(1, figure('attempts_total', 'os:system',
                                   outcome='refused'))
        self.assertEqual(0, total(samples, 'gocept_runner_job_attempts_total',
                                  outcome='conflict') +
                         total(samples, 'gocept_runner_job_attempts_total',
                               outcome='died'))
        # The run times of the attempts that ran: the slow ones are in the
        # buckets from 0.5 seconds on, not in that of 0.25.
        self.assertEqual(2, figure('duration_seconds_count', SLOW))
        self.assertEqual(0, figure('duration_seconds_bucket', SLOW,
                                   le='0.25'))
        self.assertEqual(2, figure('duration_seconds_bucket', SLOW,
                                   le='+Inf'))
        self.assertGreaterEqual(figure('duration_seconds_sum', SLOW), 0.6)
        self.assertEqual(3, figure('duration_seconds_count', FAIL))
        self.assertEqual(3, figure('duration_seconds_count', MARK))
        self.assertEqual(0, figure('duration_seconds_count', 'os:system'))
        # Two workers in one process: one sample of their loops' figures.
        ticks = [key for key in samples
                 if key[0] == 'gocept_runner_ticks_total' and
                 ('outcome', 'committed') in key[1]]
        self.assertEqual(
            [('gocept_runner_ticks_total', (
                ('outcome', 'committed'),
                ('worker', 'gocept.runner.jobs.worker.work')))], ticks)
        with self.client() as client:
            self.assertEqual([1, 1, 1, 1, 1], [
                c.count for c in client.counters_of() +
                client.counters_of('slow')])

    def test_gocept_runner_serves_them_and_a_metrics_file_has_them(self):
        with self.client() as client:
            for counter in client.counters(2):
                jobprograms.mark.delay(counter)
            transaction.commit()
        path = os.path.join(self.dir, 'jobs.prom')
        worker = self.start('gocept-runner', '--metrics-file', path,
                            'gocept.runner.jobs:work',
                            'gocept.runner.jobs:work')
        samples = worker.scrape(lambda samples: value(
            samples, 'gocept_runner_job_done_total', job_name=MARK) == 2)
        self.assertEqual(0, worker.stop())
        self.assertEqual(2, value(samples, 'gocept_runner_job_attempts_total',
                                  job_name=MARK, outcome='done'))
        with open(path) as f:
            written = parse(f.read())
        self.assertEqual(2, value(written, 'gocept_runner_job_done_total',
                                  job_name=MARK))
        self.assertEqual(2, value(
            written, 'gocept_runner_job_duration_seconds_count',
            job_name=MARK))


class ZEOTest(Workers, unittest.TestCase):

    layer = testing.ZEO_LAYER

    def zodb_section(self):
        return self.layer.server.zodb_section()

    def test_the_depth_of_the_queue_and_the_age_of_its_oldest_job(self):
        with self.client() as client:
            client.set(dead_after=2)
            # The one worker runs this job for 30 seconds.
            long_id = jobprograms.long_run.delay(client.counters(1)[0])
            transaction.commit()
            worker = self.start('gocept-jobs')
            client.wait(lambda: client.jobs().get(long_id).state
                        == 'running', TIMEOUT, worker.output())
            # Due two minutes ago, and in an hour.
            due = time.time() - 120
            for counter in client.counters(3, 'due'):
                jobprograms.mark.apply_async((counter,), eta=due)
            for counter in client.counters(2, 'later'):
                jobprograms.mark.apply_async((counter,), countdown=3600)
            transaction.commit()
            put = time.time()

        def fresh(samples):
            return (value(samples, 'gocept_runner_job_queue_read'
                                   '_timestamp_seconds') or 0) > put
        samples = worker.scrape(fresh)
        scraped = time.time()
        self.assertEqual(
            {'pending': 3, 'delayed': 2, 'running': 1, 'failed': 0},
            {state: value(samples, 'gocept_runner_job_queue_depth',
                          state=state) for state in metrics.STATES})
        age = value(samples, 'gocept_runner_job_oldest_pending_age_seconds')
        self.assertGreaterEqual(age, put - due)
        self.assertLessEqual(age, scraped - due)
        # It grows between two reads of the queue.
        time.sleep(1)
        later = worker.scrape(lambda samples: True)
        self.assertGreaterEqual(
            value(later, 'gocept_runner_job_oldest_pending_age_seconds'),
            age + 1)

    def test_the_process_that_finds_a_dead_one_counts_its_job(self):
        with self.client() as client:
            client.set(dead_after=2)
            long_id = jobprograms.long_run.delay(client.counters(1)[0])
            transaction.commit()
            dying = jobprograms.start(self.dir)
            self.addCleanup(dying.wait)
            self.addCleanup(dying.kill)
            client.wait(lambda: client.jobs().get(long_id).state
                        == 'running', TIMEOUT, jobprograms.output(self.dir))
            dying.kill()
            worker = self.start('gocept-jobs')
            # No retries: its attempt died, and it failed for good.
            samples = worker.scrape(lambda samples: value(
                samples, 'gocept_runner_job_failed_total',
                job_name=LONG) == 1)
            self.assertEqual(1, value(
                samples, 'gocept_runner_job_attempts_total', job_name=LONG,
                outcome='died'))
            self.assertEqual(0, value(
                samples, 'gocept_runner_job_duration_seconds_count',
                job_name=LONG))
            self.assertEqual('failed', client.record(long_id).state)
        self.assertEqual(0, worker.stop())
