"""Job workers when things go wrong around them: the storage server goes
away and comes back, a job's principal is gone, and the workers of the
embedded default zope.conf of gocept-runner."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

import transaction

from gocept.runner import testing
from gocept.runner.jobs.record import Job
from gocept.runner.tests import jobprograms
from gocept.runner.tests.test_jobs_workers import TIMEOUT


def output(directory):
    """The end of the workers' output, for a failure's message."""
    return jobprograms.output(directory)[-3000:]


class OutageTest(unittest.TestCase):
    """A ZEO server of the test's own, stopped while workers run jobs."""

    layer = testing.JobsLayer

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='gocept.runner.jobs.')
        self.addCleanup(shutil.rmtree, self.dir)
        self.server = testing.ZEOServer(self.dir)
        self.server.start()
        self.addCleanup(self.server.stop)
        self.zodb = self.server.zodb_section()
        jobprograms.write_zope_conf(self.dir, self.zodb)

    def test_no_job_is_lost_or_done_twice_when_the_server_goes_away(self):
        count = 300
        with jobprograms.client(self.zodb) as client:
            counters = client.counters(count)
            ids = [jobprograms.slow_mark.delay(counter, 0.01)
                   for counter in counters]
            transaction.commit()
        worker = jobprograms.start(self.dir, workers=2, burst=1)
        self.addCleanup(lambda: worker.poll() is None and worker.kill())
        with jobprograms.client(self.zodb) as client:
            client.wait(lambda: sum(c.count for c in client.counters_of())
                        >= 20, message='for the first jobs')
        self.server.stop()
        time.sleep(3)
        self.assertIsNone(worker.poll(), output(self.dir))
        self.server.start()
        self.assertEqual(0, worker.wait(TIMEOUT),
                         output(self.dir))
        with jobprograms.client(self.zodb) as client:
            container = client.fresh()
            outcomes = set()
            for job_id, counter in zip(ids, client.counters_of()):
                job = container.get(job_id)
                self.assertEqual('done', job.state, job.attempts)
                self.assertEqual(1, counter.count, job.attempts)
                outcomes.update(a.outcome for a in job.attempts)
            self.assertEqual(0, len(container))
            self.assertEqual([], list(container.failed()))
            self.assertEqual([], list(container.running()))
        # A job that ran while the server went away waited for it (ZEO's
        # client waits up to 30 seconds), or was tried again, which does not
        # count against its retries.
        self.assertLessEqual(outcomes, {'done', 'interrupted', 'conflict'})


class PrincipalTest(unittest.TestCase):

    layer = testing.JobsLayer

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='gocept.runner.jobs.')
        self.addCleanup(shutil.rmtree, self.dir)
        self.zodb = (f'<zodb>\n  <filestorage>\n    path {self.dir}/Data.fs'
                     '\n  </filestorage>\n</zodb>\n')
        jobprograms.write_zope_conf(self.dir, self.zodb)

    def test_a_job_whose_principal_is_gone_fails_naming_it(self):
        with jobprograms.client(self.zodb) as client:
            gone, other = client.counters(2)
            record = Job(uuid.uuid4().hex,
                         'gocept.runner.tests.jobprograms:mark', (gone,),
                         retries=1, retry_pause=0.1, principal='zope.gone')
            client.jobs().put(record)
            other_id = jobprograms.mark.delay(other)
            transaction.commit()
        process = jobprograms.start(self.dir, burst=1)
        self.assertEqual(0, process.wait(TIMEOUT),
                         output(self.dir))
        with jobprograms.client(self.zodb) as client:
            job = client.record(record.id)
            self.assertEqual('failed', job.state)
            self.assertEqual(
                ["ConfigurationError: Unknown principal 'zope.gone'"] * 2,
                [attempt.error for attempt in job.attempts])
            self.assertEqual('done', client.record(other_id).state)
            self.assertEqual([0, 1], [c.count for c in client.counters_of()])


class DefaultConfigTest(unittest.TestCase):
    """gocept-runner's embedded default: ./var/Data.fs, the minimal site."""

    layer = testing.JobsLayer

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='gocept.runner.jobs.')
        self.addCleanup(shutil.rmtree, self.dir)
        with open(os.path.join(self.dir, 'mytasks.py'), 'w') as f:
            f.write(MYTASKS)

    def run_in_dir(self, *argv):
        env = {key: value for key, value in os.environ.items()
               if key != 'GOCEPT_RUNNER_CONFIG'}
        return subprocess.run([sys.executable, '-m', *argv],
                              capture_output=True, text=True, cwd=self.dir,
                              env=env, timeout=TIMEOUT)

    def test_jobs_put_and_done_without_a_zope_conf(self):
        put = self.run_in_dir('gocept.runner', 'mytasks:put')
        self.assertEqual(0, put.returncode, put.stderr)
        work = self.run_in_dir('gocept.runner.jobs', 'work', '--workers',
                               '2', '--import', 'mytasks', '--burst')
        self.assertEqual(0, work.returncode, work.stderr)
        listed = self.run_in_dir('gocept.runner.jobs', 'list', '--done')
        self.assertEqual(0, listed.returncode, listed.stderr)
        self.assertEqual(10, len(listed.stdout.splitlines()), listed.stdout)
        check = self.run_in_dir('gocept.runner', 'mytasks:total')
        self.assertEqual(0, check.returncode, check.stderr)
        self.assertIn('total 45', check.stderr)


MYTASKS = '''\
import logging

import zope.component.hooks

import gocept.runner
from gocept.runner.jobs import job


log = logging.getLogger('mytasks')


def root():
    return zope.component.hooks.getSite()._p_jar.root()


@job
def add(number):
    root()['total'] = root().get('total', 0) + number


@gocept.runner.once()
def put():
    for number in range(10):
        add.delay(number)


@gocept.runner.once()
def total():
    log.warning('total %s', root().get('total'))
'''
