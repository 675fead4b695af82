"""Runners on RelStorage, on a real PostgreSQL server."""

import os
import shutil
import tempfile
import unittest

from gocept.runner import testing


class LayerTests(unittest.TestCase):
    """The PostgreSQL layer runs for anybody, wherever the checkout is."""

    def test_a_server_starts_with_TMPDIR_in_a_private_directory(self):
        if testing.postgresql_bin() is None:
            self.skipTest('PostgreSQL is not installed')
        private = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, private)
        os.chmod(private, 0o700)
        self.addCleanup(setattr, tempfile, 'tempdir', tempfile.tempdir)
        tempfile.tempdir = private
        layer = testing.PostgreSQLLayer('test')
        layer.setUp()
        directory = layer.directory
        try:
            connection = layer.server.connect()
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT current_setting('fsync'),"
                    " current_setting('listen_addresses'),"
                    " current_setting('unix_socket_directories')")
                settings = cursor.fetchone()
            connection.close()
        finally:
            layer.tearDown()
        self.assertEqual(('off', '127.0.0.1', directory), settings)
        self.assertFalse(os.path.exists(directory))
