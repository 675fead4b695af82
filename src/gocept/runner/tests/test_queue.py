"""Taking items from a queue of pending items in a BTree."""

import os
import shutil
import tempfile
import unittest

import BTrees.IOBTree
import BTrees.LOBTree
import transaction
import ZODB
import ZODB.FileStorage
from ZODB.POSException import ConflictError

from gocept.runner.queue import take


class TakeTest(unittest.TestCase):

    def test_returns_none_for_an_empty_tree(self):
        self.assertIsNone(take(BTrees.IOBTree.IOBTree()))

    def test_removes_every_item_once(self):
        pending = BTrees.LOBTree.LOBTree(
            {number * 7: f'job {number}' for number in range(500)})
        taken = []
        while (item := take(pending)) is not None:
            taken.append(item)
        self.assertEqual(0, len(pending))
        self.assertEqual(
            sorted((number * 7, f'job {number}') for number in range(500)),
            sorted(taken))

    def test_does_not_take_the_items_in_order(self):
        pending = BTrees.IOBTree.IOBTree({n: n for n in range(1000)})
        taken = [take(pending)[0] for _ in range(10)]
        self.assertNotEqual(sorted(taken), taken)


class ConcurrentTakeTest(unittest.TestCase):
    """Two connections take items at the same time from a FileStorage."""

    def setUp(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(directory, 'Data.fs')))
        self.addCleanup(self.db.close)
        with self.db.transaction() as conn:
            conn.root()['pending'] = BTrees.IOBTree.IOBTree(
                {n: n for n in range(10000)})

    def test_mostly_merge_and_lose_nothing(self):
        managers = [transaction.TransactionManager() for _ in range(2)]
        connections = [self.db.open(tm) for tm in managers]
        taken = []
        conflicts = 0
        for _ in range(100):
            items = [take(conn.root()['pending']) for conn in connections]
            for tm, item in zip(managers, items):
                try:
                    tm.commit()
                    taken.append(item)
                except ConflictError:
                    tm.abort()
                    conflicts += 1
        for conn in connections:
            conn.close()
        # Spread over 10000 keys, two takes seldom touch the same bucket.
        self.assertLess(conflicts, 40)
        with self.db.transaction() as conn:
            pending = conn.root()['pending']
            self.assertEqual(10000, len(pending) + len(taken))
            self.assertEqual(len(taken), len({key for key, _ in taken}))
            self.assertFalse(any(key in pending for key, _ in taken))
