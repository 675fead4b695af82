"""Between ticks the object cache is within its configured size."""

import shutil
import tempfile
import unittest

import persistent
import persistent.list
import transaction
import ZODB

import gocept.runner


class Item(persistent.Persistent):

    def __init__(self, value):
        self.value = value


class CacheTests(unittest.TestCase):

    def setUp(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        self.db = ZODB.DB(f'{directory}/Data.fs', cache_size=100)
        self.addCleanup(self.db.close)
        conn = self.db.open()
        self.addCleanup(conn.close)
        self.addCleanup(transaction.abort)
        self.root = conn.root()
        self.root['items'] = persistent.list.PersistentList(
            Item(i) for i in range(2000))
        transaction.commit()
        conn.cacheMinimize()

    def test_a_worker_reading_many_objects(self):
        sizes = []

        def worker():
            sizes.append(self.db.cacheSize())
            self.assertEqual(
                sum(range(2000)), sum(i.value for i in self.root['items']))
            self.assertGreater(self.db.cacheSize(), 2000)
        gocept.runner.MainLoop(self.root, 0, worker, max_ticks=5).run()
        sizes.append(self.db.cacheSize())
        self.assertLessEqual(max(sizes), 100)

    def test_a_tick_that_fails(self):
        sizes = []

        def worker():
            sizes.append(self.db.cacheSize())
            for item in self.root['items']:
                item.value += 1
            raise ValueError('fails after reading and changing everything')
        loop = gocept.runner.MainLoop(self.root, 0, worker, max_ticks=3)
        with self.assertLogs('gocept.runner'):
            loop.run()
        sizes.append(self.db.cacheSize())
        self.assertLessEqual(max(sizes), 100)
