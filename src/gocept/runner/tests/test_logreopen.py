"""SIGUSR2 reopens the log files, as logrotate and zdaemon expect."""

import os
import shutil
import signal
import tempfile
import time
import unittest

from gocept.runner import testing
from gocept.runner.tests import programs


class LogReopenTest(unittest.TestCase):
    layer = testing.SubprocessLayer

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.log = os.path.join(self.dir, 'runner.log')
        programs.write_zope_conf(self.dir, level='DEBUG', log=self.log)

    def read(self, path):
        with open(path) as f:
            return f.read()

    def wait_for_log(self, text, timeout=30):
        deadline = time.monotonic() + timeout
        while not (os.path.exists(self.log) and text in self.read(self.log)):
            self.assertLess(time.monotonic(), deadline,
                            f'No {text!r} in {self.log}')
            time.sleep(0.01)

    def test_sigusr2_during_sleep_moves_the_log_to_a_new_file(self):
        process = programs.start(self.dir, 'count', ticks=3600)
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        programs.wait_for(self.dir, 'committed 1')
        self.wait_for_log('Tick 1 ')
        # What logrotate does: move the file, then signal the process.
        os.rename(self.log, self.log + '.1')
        process.send_signal(signal.SIGUSR2)
        self.wait_for_log('Log files reopened')
        process.send_signal(signal.SIGTERM)
        self.assertEqual(0, process.wait(timeout=30))
        # The loop slept on: one tick in all.
        self.assertEqual(['committing 1', 'committed 1',
                          'stopped because signal'],
                         programs.read_report(self.dir))
        old, new = self.read(self.log + '.1'), self.read(self.log)
        self.assertIn('Tick 1 ', old)
        self.assertNotIn('Log files reopened', old)
        self.assertIn(
            'INFO gocept.runner.runner Received signal 15, terminating.',
            new)
        self.assertNotIn('Tick 1 ', new)
