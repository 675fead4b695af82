"""What transaction_per_item tells about a run."""

import logging
import time
import unittest

import transaction

import gocept.runner
from gocept.runner import peritem


class ProgressTests(unittest.TestCase):

    def setUp(self):
        self.addCleanup(setattr, peritem, 'PROGRESS_INTERVAL',
                        peritem.PROGRESS_INTERVAL)
        self.addCleanup(transaction.abort)

    def run_items(self, count, seconds_each=0):
        @gocept.runner.transaction_per_item
        def items():
            for number in range(count):
                yield lambda: time.sleep(seconds_each)
        with self.assertLogs('gocept.runner.peritem', logging.DEBUG) as logs:
            items()
        return logs.records

    def test_a_short_run_is_quiet_at_info(self):
        [summary] = self.run_items(10)
        self.assertEqual(logging.DEBUG, summary.levelno)
        self.assertRegex(summary.getMessage(),
                         r'items: 10 items committed, 0 failed, 0 conflicts'
                         r' in \d+\.\d s \(\d+\.\d items/s\)$')

    def test_a_long_run_logs_progress_and_summary_at_info(self):
        peritem.PROGRESS_INTERVAL = 0.1
        records = self.run_items(10, 0.03)
        self.assertEqual({logging.INFO}, {r.levelno for r in records})
        *progress, summary = [r.getMessage() for r in records]
        # 0.3 s in steps of 0.1 s, give or take a busy machine.
        self.assertGreaterEqual(len(progress), 1)
        self.assertLessEqual(len(progress), 3)
        for line in progress:
            self.assertRegex(line, r'items: \d+ items committed, 0 failed,'
                             r' 0 conflicts in \d+\.\d s \(\d+\.\d items/s\)'
                             r' so far$')
        self.assertIn('items: 10 items committed, 0 failed', summary)
