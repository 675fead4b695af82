"""Stopping a runner process by signal: at once, losing nothing."""

import shutil
import signal
import tempfile
import time
import unittest

import ZODB

from gocept.runner import testing
from gocept.runner.tests import programs


class StopTests(unittest.TestCase):
    layer = testing.SubprocessLayer

    def setUp(self):
        self.new_directory()

    def new_directory(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        programs.write_zope_conf(self.dir)

    def start(self, program, env=None, **options):
        process = programs.start(self.dir, program, env, **options)
        # Cleanups run last in, first out.
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        return process

    def stop(self, process, signum):
        """Send `signum`; return the seconds until the process ended."""
        sent = time.monotonic()
        process.send_signal(signum)
        self.assertEqual(0, process.wait(timeout=30))
        return time.monotonic() - sent

    def output(self):
        with open(f'{self.dir}/output') as f:
            return f.read()

    def stored_count(self):
        db = ZODB.DB(f'{self.dir}/Data.fs', read_only=True)
        try:
            with db.transaction() as conn:
                return conn.root().get('count')
        finally:
            db.close()

    def test_a_signal_ends_a_long_sleep_at_once(self):
        for signum in signal.SIGTERM, signal.SIGHUP, signal.SIGINT:
            with self.subTest(signal=signum):
                self.new_directory()
                process = self.start('count', ticks=3600)
                programs.wait_for(self.dir, 'committed 1')
                # The exact figure belongs to the benchmarks; a loop that
                # sleeps through the signal takes an hour.
                self.assertLess(self.stop(process, signum), 2)
                self.assertIn('stopped because signal',
                              programs.read_report(self.dir))
                self.assertIn(
                    'INFO gocept.runner.runner Received signal'
                    f' {int(signum)}, terminating.', self.output())

    def test_sigterm_lets_the_running_tick_finish_and_commit(self):
        process = self.start('sleepy', ticks=3600,
                             env={'SLEEPY_SECONDS': '0.5'})
        programs.wait_for(self.dir, 'sleeping in tick 1')
        self.stop(process, signal.SIGTERM)
        self.assertEqual(
            ['sleeping in tick 1', 'woke up in tick 1',
             'stopped because signal'], programs.read_report(self.dir))
        self.assertEqual(1, self.stored_count())

    def test_sigint_aborts_the_running_tick(self):
        process = self.start('sleepy', ticks=3600)
        programs.wait_for(self.dir, 'sleeping in tick 1')
        # The tick would sleep 30 s.
        self.assertLess(self.stop(process, signal.SIGINT), 2)
        self.assertEqual(
            ['sleeping in tick 1', 'stopped because signal'],
            programs.read_report(self.dir))
        self.assertIsNone(self.stored_count())
        self.assertIn('Received signal 2, terminating.', self.output())
        self.assertNotIn('Traceback', self.output())

    def test_a_limit_ends_the_process_with_status_75(self):
        # tests/programs.py exits as the example program of the zdaemon
        # guide does.
        process = self.start('count', ticks=0, max_ticks=3)
        self.assertEqual(75, process.wait(timeout=30))
        self.assertEqual('stopped because max_ticks',
                         programs.read_report(self.dir)[-1])
        self.assertIn('committed 3', programs.read_report(self.dir))
