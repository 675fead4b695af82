"""The metrics of schedules: a worker process with a metrics file gives
each schedule's last success and next run."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import prometheus_client.parser

from gocept.runner import testing
from gocept.runner.tests import jobprograms
from gocept.runner.tests import schedulejobs


NAME = 'gocept.runner.tests.schedulejobs:'


class MetricsTest(unittest.TestCase):

    layer = testing.JobsLayer

    def test_last_success_and_next_run_of_each_schedule(self):
        directory = tempfile.mkdtemp(prefix='gocept.runner.schedules.')
        self.addCleanup(shutil.rmtree, directory)
        conf = jobprograms.write_zope_conf(
            directory, '<zodb>\n  <filestorage>\n'
            f'    path {directory}/Data.fs\n  </filestorage>\n</zodb>\n',
            extra=f'<schedules>\n  {schedulejobs.MODULE}.every_second\n'
                  f'  {schedulejobs.MODULE}.nightly\n</schedules>\n')
        path = os.path.join(directory, 'metrics.prom')
        started = time.time()
        result = subprocess.run(
            [sys.executable, '-m', 'gocept.runner.jobs', 'work', '-C', conf,
             '--max-runtime', '4', '--metrics-file', path],
            capture_output=True, text=True, cwd=directory, timeout=120)
        ended = time.time()
        self.assertEqual(75, result.returncode, result.stderr)
        with open(path) as f:
            samples = {
                (sample.name, sample.labels.get('schedule')): sample.value
                for family in prometheus_client.parser
                .text_string_to_metric_families(f.read())
                for sample in family.samples}
        last = 'gocept_runner_schedule_last_success_timestamp_seconds'
        following = 'gocept_runner_schedule_next_run_timestamp_seconds'
        success = samples[last, NAME + 'every_second']
        self.assertTrue(started < success < ended, (started, success, ended))
        self.assertTrue(
            ended - 2 < samples[following, NAME + 'every_second'] < ended + 2)
        self.assertEqual(0, samples[last, NAME + 'nightly'])
        self.assertEqual(
            schedulejobs.nightly.schedule.after(ended),
            samples[following, NAME + 'nightly'])
