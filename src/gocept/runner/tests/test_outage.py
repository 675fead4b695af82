"""What happens when the storage is gone: the Outage middleware, which
errors say so, and a runner that outlives its ZEO server going away and
coming back."""

import shutil
import signal
import tempfile
import time
import unittest

import psycopg2
import relstorage.storage.interfaces
import ZEO
import ZEO.Exceptions
from ZODB.POSException import ConflictError

import gocept.runner
from gocept.runner import outage as outage_module
from gocept.runner import testing
from gocept.runner.tests import programs
from gocept.runner.tests.fakeloop import FakeLoop


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


class OutageTest(unittest.TestCase):
    """The Outage middleware on a fake loop."""

    def setUp(self):
        self.loop = FakeLoop('a')
        self.outage = outage_module.Outage()

    def tick(self, outcome, error=None, ago=0):
        """A tick of `outcome` that began `ago` seconds ago, after which
        the loop would sleep 5 seconds; return its pause after the
        middleware."""
        tick = self.loop.tick(outcome, pause=5, error=error)
        tick.started -= ago
        self.outage.after_tick(self.loop, tick)
        return tick.pause

    def test_the_pause_doubles_while_the_storage_is_unavailable(self):
        first, longest = outage_module.OUTAGE_PAUSE
        gone = ZEO.Exceptions.ClientDisconnected()
        with self.assertLogs('gocept.runner.outage', 'DEBUG') as logs:
            self.assertEqual(5, self.tick('committed'))
            pauses = [self.tick('unavailable', gone) for _ in range(12)]
            self.assertEqual(5, self.tick('committed'))
            self.assertEqual(first, self.tick('unavailable', gone))
        self.assertEqual([min(first * 2 ** i, longest) for i in range(12)],
                         pauses)
        self.assertEqual(
            [('WARNING', 'Storage unavailable (ClientDisconnected),'
                         ' transaction of worker a aborted; trying again'
                         ' until it is back'),
             ('INFO', 'Storage available again, worker a goes on'),
             ('WARNING', 'Storage unavailable (ClientDisconnected),'
                         ' transaction of worker a aborted; trying again'
                         ' until it is back')],
            [(r.levelname, r.getMessage()) for r in logs.records])

    def test_a_tick_that_reached_the_storage_ends_the_outage(self):
        for outcome in 'committed', 'doomed', 'conflict':
            with self.assertLogs('gocept.runner.outage', 'INFO') as logs:
                self.tick('unavailable', OSError('full'))
                self.tick(outcome)
            self.assertEqual(2, len(logs.records), outcome)

    def test_a_tick_that_failed_otherwise_does_not(self):
        with self.assertLogs('gocept.runner.outage', 'INFO') as logs:
            first = self.tick('unavailable', OSError('full'))
            self.assertEqual(5, self.tick('error', ValueError()))
            self.assertEqual(5, self.tick('aborted', SystemExit()))
            self.assertEqual(2 * first, self.tick('unavailable'))
        self.assertEqual(1, len(logs.records))
        self.assertIsNotNone(self.outage.since)

    def test_the_seconds_of_all_outages(self):
        self.assertEqual(0, self.outage.seconds())
        with self.assertLogs('gocept.runner.outage', 'INFO'):
            self.tick('unavailable', OSError(), ago=10)
            self.assertGreaterEqual(self.outage.seconds(), 10)
            self.tick('committed', ago=6)  # it began 4 seconds later
            self.assertAlmostEqual(4, self.outage.seconds(), delta=0.5)
            self.tick('unavailable', OSError(), ago=2)
        self.assertAlmostEqual(6, self.outage.seconds(), delta=0.5)

    def test_a_message_of_several_lines_is_logged_on_one(self):
        error = psycopg2.OperationalError(
            'connection to server failed:\n\tConnection refused\n')
        with self.assertLogs('gocept.runner.outage', 'WARNING') as logs:
            self.tick('unavailable', error)
        self.assertIn('(OperationalError: connection to server failed:'
                      ' Connection refused)', logs.records[0].getMessage())


class UnavailableTest(unittest.TestCase):
    """Which errors say that the storage is unavailable."""

    def test_a_disconnected_zeo_client(self):
        self.assertTrue(outage_module.unavailable(
            ZEO.Exceptions.ClientDisconnected()))

    def test_a_postgresql_server_out_of_reach(self):
        unavailable = outage_module.unavailable
        self.assertTrue(unavailable(psycopg2.InterfaceError(
            'connection already closed')))
        self.assertTrue(unavailable(psycopg2.OperationalError(
            'server closed the connection unexpectedly')))
        self.assertTrue(unavailable(
            relstorage.storage.interfaces.StorageDisconnectedDuringCommit()))
        # The server refuses a new connection for a while.
        self.assertTrue(unavailable(psycopg2.OperationalError(
            'connection failed: FATAL:  the database system is starting'
            ' up')))
        self.assertTrue(unavailable(psycopg2.OperationalError(
            'FATAL:  sorry, too many clients already')))

    def test_a_mistake_in_the_configuration_is_no_outage(self):
        self.assertFalse(outage_module.unavailable(psycopg2.OperationalError(
            'connection failed: FATAL:  database "nosuch" does not exist')))
        self.assertFalse(outage_module.unavailable(
            psycopg2.ProgrammingError('syntax error')))

    def test_other_errors_are_none(self):
        for error in ValueError(), KeyError('x'), ConflictError():
            self.assertFalse(outage_module.unavailable(error), error)
