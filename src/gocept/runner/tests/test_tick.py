"""One tick: the worker in a transaction of its own, its outcome, what is
logged about it, the pause after it; on a FileStorage on disk."""

import decimal
import fractions
import logging
import math
import unittest

import transaction
import ZEO.Exceptions
from ZODB.POSException import ConflictError

import gocept.runner
from gocept.runner import retry
from gocept.runner.tests.fakeloop import root
from gocept.runner.tests.test_mainloop import FailingDataManager
from gocept.runner.tick import MAX_PAUSE
from gocept.runner.tick import Tick
from gocept.runner.tick import pause_after


class PauseAfterTest(unittest.TestCase):

    def test_nothing_or_a_truth_value_means_the_ticks(self):
        for result in None, True, False:
            self.assertEqual((7, None), pause_after(result, 7))

    def test_a_number_of_seconds_is_taken_as_it_is(self):
        for result in 0, 2, 0.5, decimal.Decimal('2.5'), fractions.Fraction(
                1, 4), MAX_PAUSE:
            self.assertEqual((result, None), pause_after(result, 7))

    def test_the_workers_mistakes(self):
        for result, expected in [
                ('5', (7, 'not a number')),
                ([], (7, 'not a number')),
                (math.nan, (7, 'NaN')),
                (decimal.Decimal('sNaN'), (7, 'NaN')),
                (1j, (7, 'NaN')),
                (-1, (0, 'negative')),
                (-math.inf, (0, 'negative')),
                (MAX_PAUSE + 1, (MAX_PAUSE, 'longer than a year')),
                (math.inf, (MAX_PAUSE, 'longer than a year')),
                (10 ** 400, (MAX_PAUSE, 'longer than a year'))]:
            with self.subTest(result=result):
                self.assertEqual(expected, pause_after(result, 7))


class Conflicting:
    """A data manager whose vote raises a ConflictError, the first `times`
    times (of all instances)."""

    transaction_manager = transaction.manager
    times = 0

    def tpc_vote(self, txn):
        if Conflicting.times:
            Conflicting.times -= 1
            raise ConflictError('in the vote')

    def abort(self, txn):
        pass

    tpc_begin = commit = tpc_finish = tpc_abort = abort

    def sortKey(self):
        return 'zzz-conflicting'


class TickTest(unittest.TestCase):

    def setUp(self):
        self.app = root(self)
        self.in_worker = []

    def tick(self, work, ticks=5, **options):
        """Run a tick of a MainLoop of `work`; return the tick."""
        def worker():
            self.in_worker.append(self.loop.in_worker)
            return work()
        worker.__qualname__ = 'work'
        self.loop = gocept.runner.MainLoop(self.app, ticks, worker, **options)
        self.loop.running = True
        tick = self.loop.tick()
        self.assertFalse(self.loop.in_worker)
        return tick

    def stored(self):
        transaction.abort()
        return dict(self.app)

    def test_committed(self):
        def work():
            self.app['count'] = 1
            return 2
        with self.assertLogs('gocept.runner', logging.DEBUG) as logs:
            tick = self.tick(work)
        self.assertEqual(('committed', None, 2, 2),
                         (tick.outcome, tick.error, tick.result, tick.pause))
        self.assertEqual({'count': 1}, self.stored())
        self.assertEqual([True], self.in_worker)
        self.assertGreaterEqual(tick.ended, tick.started)
        self.assertRegex(logs.records[-1].getMessage(),
                         r'^Tick 1 of worker work: committed in \d+\.\d{3} s$')
        self.assertEqual('gocept.runner.runner', logs.records[-1].name)
        self.assertTrue(self.loop.running)

    def test_doomed(self):
        def work():
            self.app['count'] = 1
            transaction.doom()
        tick = self.tick(work)
        self.assertEqual(('doomed', 5), (tick.outcome, tick.pause))
        self.assertEqual({}, self.stored())

    def test_an_error_of_the_worker(self):
        def work():
            self.app['count'] = 1
            raise ValueError('no')
        with self.assertLogs('gocept.runner', logging.ERROR) as logs:
            tick = self.tick(work)
        self.assertEqual(('error', 5), (tick.outcome, tick.pause))
        self.assertIsInstance(tick.error, ValueError)
        self.assertEqual({}, self.stored())
        [record] = logs.records
        self.assertEqual('Error in worker work, transaction aborted',
                         record.getMessage())
        self.assertIsNotNone(record.exc_info)
        self.assertEqual('error', tick.describe())

    def test_an_error_of_the_commit(self):
        def work():
            self.app['count'] = 1
            transaction.get().join(FailingDataManager())
        with self.assertLogs('gocept.runner', logging.ERROR) as logs:
            tick = self.tick(work)
        self.assertEqual('error', tick.outcome)
        self.assertEqual({}, self.stored())
        self.assertEqual(
            ['Error committing the transaction of worker work'],
            [r.getMessage() for r in logs.records])

    def test_a_conflict_that_goes_away_is_retried(self):
        calls = []

        def work():
            calls.append(1)
            self.app['count'] = len(calls)
            transaction.get().join(Conflicting())
        Conflicting.times = 1
        with self.assertLogs('gocept.runner', logging.DEBUG) as logs:
            tick = self.tick(work)
        self.assertEqual(('committed', 1, 1),
                         (tick.outcome, tick.retried, tick.conflicts))
        self.assertEqual({'count': 2}, self.stored())
        self.assertEqual('committed after 1 conflicts', tick.describe())
        self.assertEqual([], [r for r in logs.records
                              if r.levelno > logging.DEBUG])

    def test_a_conflict_that_stays(self):
        def work():
            transaction.get().join(Conflicting())
        Conflicting.times = retry.ATTEMPTS
        with self.assertLogs('gocept.runner', logging.WARNING) as logs:
            tick = self.tick(work)
        self.assertEqual(('conflict', retry.ATTEMPTS),
                         (tick.outcome, tick.conflicts))
        self.assertEqual(
            [('WARNING', 'Conflict in worker work, transaction aborted after'
                         ' 3 attempts: in the vote')],
            [(r.levelname, r.getMessage()) for r in logs.records])

    def test_the_storage_unavailable(self):
        def work():
            raise ZEO.Exceptions.ClientDisconnected('gone')
        with self.assertNoLogs('gocept.runner.runner', logging.INFO):
            tick = self.tick(work, middleware=())
        self.assertEqual('unavailable', tick.outcome)
        self.assertEqual('storage unavailable', tick.describe())
        self.assertEqual([True] * retry.ATTEMPTS, self.in_worker)

    def test_SystemExit_and_KeyboardInterrupt_abort_it_and_stop(self):
        for error, code in (SystemExit(3), 3), (KeyboardInterrupt(), None):
            def work():
                self.app['count'] = 1
                raise error
            tick = self.tick(work)
            self.assertEqual(('aborted', error), (tick.outcome, tick.error))
            self.assertEqual(f'aborted by {type(error).__name__}',
                             tick.describe())
            self.assertEqual((type(error).__name__, code, False),
                             (self.loop.stopped_because, self.loop.exit_code,
                              self.loop.running))
            self.assertEqual({}, self.stored())

    def test_Exit_commits_and_stops(self):
        def work():
            self.app['count'] = 1
            return gocept.runner.Exit
        tick = self.tick(work)
        self.assertEqual(('committed', 0), (tick.outcome, tick.pause))
        self.assertEqual(('Exit', False),
                         (self.loop.stopped_because, self.loop.running))
        self.assertEqual({'count': 1}, self.stored())
        self.assertEqual('gocept.runner.Exit', repr(gocept.runner.Exit))

    def test_a_mistaken_result_is_a_warning_once_per_kind(self):
        results = iter(['5', 'x', -1, '6'])
        with self.assertLogs('gocept.runner', logging.DEBUG) as logs:
            self.tick(lambda: next(results), ticks=2)
            pauses = [self.loop.tick().pause for _ in range(3)]
        self.assertEqual([2, 0, 2], pauses)
        self.assertEqual(
            [('WARNING', "Worker work returned '5', which is not a number;"
                         ' sleeping 2 seconds'),
             ('DEBUG', "Worker work returned 'x', which is not a number;"
                       ' sleeping 2 seconds'),
             ('WARNING', 'Worker work returned -1, which is negative;'
                         ' sleeping 0 seconds'),
             ('DEBUG', "Worker work returned '6', which is not a number;"
                       ' sleeping 2 seconds')],
            [(r.levelname, r.getMessage()) for r in logs.records
             if 'returned' in r.getMessage()])

    def test_a_new_tick_has_no_outcome_yet(self):
        tick = Tick(4)
        self.assertEqual((4, None, None, 0, None),
                         (tick.number, tick.outcome, tick.error, tick.pause,
                          tick.ended))
