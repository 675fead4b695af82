"""Conflicts on commit are retried, for a tick and for an item."""

import logging
import shutil
import tempfile
import unittest

import transaction
import ZODB

import gocept.runner
import gocept.runner.peritem
from gocept.runner import retry


class ConflictTests(unittest.TestCase):
    """A worker conflicts with a second connection to the same FileStorage.

    The second connection has a transaction manager of its own, as if it
    were another process.
    """

    def setUp(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        self.db = ZODB.DB(f'{directory}/Data.fs')
        self.addCleanup(self.db.close)
        self.conn = self.db.open()
        self.addCleanup(self.conn.close)
        self.addCleanup(transaction.abort)
        self.root = self.conn.root()
        self.other_tm = transaction.TransactionManager()
        self.other = self.db.open(self.other_tm).root()
        self.addCleanup(self.other._p_jar.close)

    def conflicting_increment(self):
        """Add 1 to root['count'], conflicting with another commit."""
        self.root['count'] = self.root.get('count', 0) + 1
        self.other_tm.begin()
        self.other['count'] = self.other.get('count', 0) + 100
        self.other_tm.commit()

    def increment(self, conflicts):
        """A worker adding 1 to root['count']; its first `conflicts` calls
        conflict with another connection."""
        calls = []

        def increment():
            calls.append(1)
            if len(calls) <= conflicts:
                self.conflicting_increment()
            else:
                self.root['count'] = self.root.get('count', 0) + 1
        return increment

    def stored_count(self):
        self.other_tm.begin()
        return self.other['count']

    def test_a_conflicting_tick_is_retried_at_once(self):
        loop = gocept.runner.MainLoop(
            self.root, 3600, self.increment(retry.ATTEMPTS - 1), once=True)
        with self.assertLogs('gocept.runner', logging.DEBUG) as logs:
            loop.run()
        self.assertFalse(loop.failed)
        self.assertEqual(
            ['Tick 1 of worker ConflictTests.increment.<locals>.increment:'
             ' committed after 2 conflicts in ...'],
            [r.getMessage()[:-len('0.123 s')] + '...' for r in logs.records])
        self.assertEqual(2 * 100 + 1, self.stored_count())

    def test_a_tick_that_keeps_conflicting_is_dropped_with_a_warning(self):
        # The first tick conflicts on every attempt, the second commits.
        loop = gocept.runner.MainLoop(
            self.root, 0, self.increment(retry.ATTEMPTS), max_ticks=2)
        with self.assertLogs('gocept.runner', logging.INFO) as logs:
            loop.run()
        warning, limit = logs.records
        self.assertEqual(logging.WARNING, warning.levelno)
        self.assertTrue(warning.getMessage().startswith(
            'Conflict in worker ConflictTests.increment.<locals>.increment,'
            ' transaction aborted after 3 attempts: database conflict error'),
            warning.getMessage())
        self.assertIsNone(warning.exc_info)
        self.assertEqual(
            'Worker ConflictTests.increment.<locals>.increment reached'
            ' max_ticks (2), stopping.', limit.getMessage())
        self.assertEqual(3 * 100 + 1, self.stored_count())

    def test_transaction_per_item_retries_an_item(self):
        @gocept.runner.transaction_per_item
        def items():
            yield self.increment(retry.ATTEMPTS - 1)
            yield self.increment(retry.ATTEMPTS)
            yield self.increment(0)
        with self.assertLogs('gocept.runner', logging.DEBUG) as logs:
            items()
        warning, summary = logs.records
        self.assertEqual(logging.WARNING, warning.levelno)
        self.assertIn('transaction aborted after 3 attempts: database'
                      ' conflict error', warning.getMessage())
        self.assertIsNone(warning.exc_info)
        # A short run logs its summary at DEBUG.
        self.assertEqual(logging.DEBUG, summary.levelno)
        self.assertRegex(
            summary.getMessage(),
            r'^ConflictTests.test_transaction_per_item_retries_an_item'
            r'.<locals>.items: 2 items committed, 1 failed, 5 conflicts in'
            r' \d+\.\d s \(\d+\.\d items/s\)$')
        self.assertEqual((2 + 3) * 100 + 2, self.stored_count())
