"""The pieces of benchmarks/jobs.py for gocept.runner.jobs, run as the
benchmark runs them (a ZEO server, worker processes of ``gocept-jobs
work``, the call log), with this Python instead of the benchmark's
virtualenv: a change to the jobs or to the benchmark that breaks it shows
here, not in the next run of the benchmark.  Only in a checkout.
"""

import importlib
import os
import shutil
import sys
import tempfile
import unittest

from gocept.runner import testing


BENCHMARKS = os.path.join(os.path.dirname(__file__), *(['..'] * 4),
                          'benchmarks')
GOCEPT_JOBS = os.path.join(os.path.dirname(sys.executable), 'gocept-jobs')


@unittest.skipUnless(os.path.exists(os.path.join(BENCHMARKS, 'jobs.py')),
                     'not in a checkout')
@unittest.skipUnless(os.path.exists(GOCEPT_JOBS), 'no gocept-jobs script')
class JobsBenchmarkTest(unittest.TestCase):

    layer = testing.SubprocessLayer

    def setUp(self):
        sys.path.insert(0, BENCHMARKS)
        self.addCleanup(sys.path.remove, BENCHMARKS)
        self.jobs = importlib.import_module('jobs')
        self.directory = tempfile.mkdtemp(prefix='gocept.runner.jobbench.')
        self.addCleanup(shutil.rmtree, self.directory)

    def test_two_worker_processes_drain_jobs_that_write(self):
        system = self.jobs.OnZEO({}, python=sys.executable)
        result = self.jobs.trial(
            system, os.path.join(self.directory, 'trial'), 'batch', 'write',
            30, 2, 'processes')
        self.assertEqual(0, result['lost'])
        self.assertEqual(0, result['twice'])
        self.assertEqual(30, result['check']['done'])
        self.assertGreaterEqual(result['calls'], 30)
        self.assertEqual(result['calls'] - 30, result['repeated'])
        self.assertGreater(result['rate'], 0)
        self.assertTrue(result['stopped'])
