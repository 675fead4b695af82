"""A runner outlives its ZEO server going away and coming back."""

import shutil
import signal
import tempfile
import time
import unittest

import ZEO
import ZEO.Exceptions

import gocept.runner
from gocept.runner import outage as outage_module
from gocept.runner import testing
from gocept.runner.tests import programs


class OutageTests(unittest.TestCase):
    layer = testing.SubprocessLayer

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.server = testing.ZEOServer(self.dir)
        self.server.start()
        self.addCleanup(self.server.stop)
        programs.write_zeo_client_conf(
            self.dir, self.server.address, level='DEBUG')

    def wait_for_commits(self, number):
        """Wait until the runner has reported `number` more commits."""
        committed = self.committed() + number
        deadline = time.monotonic() + 60
        while self.committed() < committed:
            self.assertLess(time.monotonic(), deadline, 'no commits')
            time.sleep(0.05)

    def committed(self):
        return sum(1 for line in programs.read_report(self.dir)
                   if line.startswith('committed '))

    def output(self):
        with open(f'{self.dir}/output') as f:
            return f.read()

    def stored_count(self):
        db = ZEO.DB(('127.0.0.1', self.server.port))
        try:
            with db.transaction() as conn:
                return conn.root()['count']
        finally:
            db.close()

    def test_the_runner_waits_for_the_storage_and_goes_on(self):
        process = programs.start(self.dir, 'count', ticks=0.1)
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        self.wait_for_commits(3)
        self.server.stop()
        # A tick retries a few times, waiting a second for the server each
        # time, before the runner says it met an outage.
        programs.wait_for_output(self.output, programs.OUTAGE)
        time.sleep(0.5)
        self.assertIsNone(process.poll())
        self.server.start()
        self.wait_for_commits(3)
        process.send_signal(signal.SIGTERM)
        self.assertEqual(0, process.wait(30))
        output = self.output()
        self.assertEqual(1, output.count('WARNING'), output)
        self.assertRegex(
            output, r'DEBUG gocept.runner.runner Tick \d+ of worker count:'
            r' storage unavailable in \d+\.\d+ s')
        self.assertIn(
            'WARNING gocept.runner.outage Storage unavailable'
            ' (ClientDisconnected), transaction of worker count aborted;'
            ' trying again until it is back', output)
        self.assertIn('INFO gocept.runner.outage Storage available again,'
                      ' worker count goes on', output)
        self.assertNotIn('ERROR', output)
        self.assertNotIn('Traceback', output)
        # No commit lost, none made twice.
        report = programs.read_report(self.dir)
        self.assertEqual('stopped because signal', report[-1])
        self.assertEqual(report[-2], f'committed {self.stored_count()}')
        self.assertEqual(
            list(range(1, self.stored_count() + 1)),
            [int(line.split()[1]) for line in report
             if line.startswith('committed ')])


class BackOffTests(unittest.TestCase):
    """While the storage is unavailable, the pause between ticks doubles."""

    def test_capped_exponential_back_off_and_one_warning(self):
        outage = []

        def worker():
            if outage:
                raise ZEO.Exceptions.ClientDisconnected('gone')
        loop = gocept.runner.MainLoop(None, 5, worker)
        with self.assertLogs('gocept.runner', 'DEBUG') as logs:
            self.assertEqual(5, loop.tick().pause)
            outage.append(True)
            pauses = [loop.tick().pause for i in range(12)]
            outage.clear()
            self.assertEqual(5, loop.tick().pause)
        first, longest = outage_module.OUTAGE_PAUSE
        self.assertEqual([min(first * 2 ** i, longest) for i in range(12)],
                         pauses)
        self.assertEqual(longest, pauses[-1])
        messages = [r.getMessage() for r in logs.records
                    if r.levelname != 'DEBUG']
        self.assertEqual(
            ['Storage unavailable (ClientDisconnected: gone), transaction of'
             ' worker BackOffTests.test_capped_exponential_back_off_and_one'
             '_warning.<locals>.worker aborted; trying again until it is'
             ' back',
             'Storage available again, worker BackOffTests.test_capped'
             '_exponential_back_off_and_one_warning.<locals>.worker goes on'],
            messages)
