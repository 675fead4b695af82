"""The ZEO server of gocept.runner.testing."""

import shutil
import tempfile
import time
import unittest

import transaction
import ZEO.ClientStorage
import ZODB
from ZEO.Exceptions import ClientDisconnected

from gocept.runner import testing
from gocept.runner.testing import ZEOServer


class ZEOServerTest(unittest.TestCase):
    layer = testing.SubprocessLayer

    def setUp(self):
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)
        self.server = ZEOServer(self.directory)
        self.addCleanup(self.server.stop)

    def test_serves_a_filestorage_and_restarts_on_the_same_port(self):
        self.server.start()
        db = ZODB.DB(ZEO.ClientStorage.ClientStorage(
            ('127.0.0.1', self.server.port), wait_timeout=2))
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        conn.root()['x'] = 1
        tm.commit()
        self.server.stop()
        conn.root()['x'] = 2
        with self.assertRaises(ClientDisconnected):
            tm.commit()
        tm.abort()
        self.server.start()
        conn.root()['x'] = 3
        for _ in range(100):
            try:
                tm.commit()
                break
            except ClientDisconnected:
                tm.abort()
                conn.root()['x'] = 3
                time.sleep(0.1)
        conn.close()
        db.close()
        self.server.stop()
        db = ZODB.DB(self.server.path)
        self.addCleanup(db.close)
        self.assertEqual(3, db.open().root()['x'])
