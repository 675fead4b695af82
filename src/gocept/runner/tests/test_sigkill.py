"""A runner killed at any moment loses no commit and leaves none half done."""

import logging
import random
import shutil
import signal
import tempfile
import time
import unittest

import ZODB
import ZODB.scripts.fstest

from gocept.runner import testing
from gocept.runner.tests import programs


# What FileStorage may say when it opens a file whose writer was killed: the
# index, written on close, is outdated and rebuilt; a transaction that was
# being written or not yet marked committed (the kill came before tpc_finish)
# is cut off the end and saved aside.  Nothing else.
RECOVERY = (
    r'^(opened'
    r'|Ignoring index for .*/Data\.fs'
    r'|.*/Data\.fs truncated at \d+'
    r'|.*/Data\.fs truncated, possibly due to damaged records at \d+'
    r'|Writing truncated data from .*/Data\.fs to .*/Data\.fs\.tr\d+)$')


class SIGKILLTests(unittest.TestCase):
    layer = testing.SubprocessLayer

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        programs.write_zope_conf(self.dir)
        self.path = f'{self.dir}/Data.fs'

    def kill_at_random(self):
        """Start a runner committing as fast as it can; SIGKILL it."""
        reported = len(programs.read_report(self.dir))
        process = programs.start(self.dir, 'count', ticks=0)
        deadline = time.monotonic() + 30
        while len(programs.read_report(self.dir)) < reported + 2:
            self.assertLess(time.monotonic(), deadline, 'runner hangs')
            time.sleep(0.01)
        time.sleep(random.uniform(0, 0.15))
        process.send_signal(signal.SIGKILL)
        self.assertEqual(-signal.SIGKILL, process.wait())

    def stored_count(self):
        """Open the FileStorage as a runner would; return the counter."""
        db = ZODB.DB(self.path)
        try:
            with db.transaction() as conn:
                return conn.root()['count']
        finally:
            db.close()
            # What opening left is a sound FileStorage.
            ZODB.scripts.fstest.check(self.path)

    def test_the_counter_is_what_the_runner_reported(self):
        # The runner reports "committing N" before its commit and
        # "committed N" once the commit has returned.  The database must
        # hold the last N reported committed, except when the kill came
        # between the two lines: then that commit was in flight, and the
        # database holds it entirely or not at all.
        for kill in range(30):
            self.kill_at_random()
            with self.assertLogs('ZODB', logging.WARNING) as logs:
                count = self.stored_count()
                logging.getLogger('ZODB').warning('opened')
            for record in logs.records:
                self.assertRegex(record.getMessage(), RECOVERY)
            report = programs.read_report(self.dir)
            committed = max(int(line.split()[1]) for line in report
                            if line.startswith('committed '))
            if report[-1] == f'committing {count}':
                self.assertEqual(committed + 1, count)
            else:
                self.assertEqual(committed, count, report[-3:])
