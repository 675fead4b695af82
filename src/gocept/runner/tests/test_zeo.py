"""Runner processes sharing a database on a real ZEO server."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import transaction
import ZEO.ClientStorage
import ZODB

import gocept.runner.testing


MINIMAL_ZCML = os.path.join(
    os.path.dirname(gocept.runner.__file__), 'minimal.zcml')


class ZEOTest(unittest.TestCase):

    layer = gocept.runner.testing.ZEO_LAYER

    def setUp(self):
        self.server = self.layer.server
        self.directory = tempfile.mkdtemp(prefix='gocept.runner.test.')
        self.addCleanup(shutil.rmtree, self.directory)
        self.processes = []
        self.addCleanup(self.kill_processes)

    def kill_processes(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def zope_conf(self, name, zodb=None):
        """Write a zope.conf for the runner `name`; return its path.

        The runner logs to `name`.log and is labelled `name` on the server.
        """
        if zodb is None:
            zodb = self.server.zodb_section(client_label=name)
        path = os.path.join(self.directory, f'{name}.conf')
        with open(path, 'w') as f:
            f.write(f'site-definition {MINIMAL_ZCML}\n')
            f.write(zodb)
            f.write(
                '<eventlog>\n'
                '  <logfile>\n'
                f'    path {self.log_path(name)}\n'
                '    format %(levelname)s %(name)s %(message)s\n'
                '  </logfile>\n'
                '</eventlog>\n')
        return path

    def log_path(self, name):
        return os.path.join(self.directory, f'{name}.log')

    def log(self, name):
        if not os.path.exists(self.log_path(name)):
            return ''
        with open(self.log_path(name)) as f:
            return f.read()

    def start(self, worker, name, *args, zodb=None):
        """Start the runner `name` running `worker`; return the process."""
        with open(self.output_path(name), 'wb') as output:
            process = subprocess.Popen(
                [sys.executable, '-m', 'gocept.runner.tests.zeoworkers',
                 worker, self.zope_conf(name, zodb)] + [str(a) for a in args],
                stdout=output, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def output_path(self, name):
        return os.path.join(self.directory, f'{name}.out')

    def wait(self, name, process):
        """Wait for the runner `name` to exit; fail if its status is not 0."""
        process.wait(300)
        with open(self.output_path(name)) as f:
            output = f.read()
        self.assertEqual(
            0, process.returncode,
            f'{name} exited with {process.returncode}:\n'
            f'{output}\n{self.log(name)}')

    def run_runner(self, worker, name, *args, zodb=None):
        """Run the runner `name` to its end; fail if it does not exit 0."""
        self.wait(name, self.start(worker, name, *args, zodb=zodb))

    def open(self):
        """A connection to the server's database, closed after the test."""
        db = ZODB.DB(ZEO.ClientStorage.ClientStorage(
            ('127.0.0.1', self.server.port), wait_timeout=30))
        self.addCleanup(db.close)
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        self.addCleanup(conn.close)
        self.addCleanup(tm.abort)
        return conn.root()


class ZEOClientTest(ZEOTest):

    def test_appmain_runs_against_a_zeoclient_section(self):
        self.run_runner('setup', 'setup')
        self.run_runner('set', 'writer', 'hello')
        self.assertEqual('hello', self.open()['value'])

    def test_zeo_clientstorage_section_with_wait_timeout_works_too(self):
        zodb = (
            '%import ZEO\n'
            '<zodb>\n'
            '  <clientstorage>\n'
            f'    server {self.server.address}\n'
            '    wait-timeout 5\n'
            '    server-sync true\n'
            '  </clientstorage>\n'
            '</zodb>\n')
        self.run_runner('setup', 'setup')
        self.run_runner('set', 'writer', 'hi', zodb=zodb)
        self.assertEqual('hi', self.open()['value'])

    def test_wait_timeout_bounds_the_wait_for_a_server_that_is_not_there(
            self):
        # <zeoclient> would wait 30 s; ZEO's own section can say less.
        port = gocept.runner.testing.free_port()
        zodb = (
            '%import ZEO\n'
            '<zodb>\n'
            '  <clientstorage>\n'
            f'    server 127.0.0.1:{port}\n'
            '    wait-timeout 1\n'
            '  </clientstorage>\n'
            '</zodb>\n')
        started = time.monotonic()
        process = self.start('set', 'lonely', 'x', zodb=zodb)
        process.wait(120)
        self.assertLess(time.monotonic() - started, 20)
        self.assertEqual(1, process.returncode)
        with open(self.output_path('lonely')) as f:
            self.assertIn(
                "ConfigurationError: Cannot open the database (ZEO server"
                f" 127.0.0.1:{port}): timed out waiting for connection",
                f.read())

    def test_the_server_log_names_the_client_label(self):
        self.run_runner('setup', 'setup')
        self.run_runner('set', 'writer-on-host-a', 'x')
        with open(os.path.join(self.server.directory, 'zeo.log')) as f:
            self.assertIn('writer-on-host-a', f.read())


class NewDatabaseTest(ZEOTest):

    def setUp(self):
        super().setUp()
        # A server of our own, with a new, empty database.
        self.server = gocept.runner.testing.ZEOServer(self.directory)
        self.server.start()
        self.addCleanup(self.server.stop)

    def test_runners_started_at_once_on_a_new_database_all_start(self):
        names = [f'starter-{i}' for i in range(8)]
        processes = [self.start('set', name, name) for name in names]
        for name, process in zip(names, processes):
            self.wait(name, process)
        root = self.open()
        self.assertIn('Application', root)
        self.assertIn(root['value'], names)


class InvalidationTest(ZEOTest):

    def lines(self, path):
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return f.read().splitlines()

    def wait_for_lines(self, path, count):
        deadline = time.monotonic() + 60
        while len(lines := self.lines(path)) < count:
            self.assertLess(time.monotonic(), deadline,
                            f'Only {len(lines)} ticks seen: {lines}')
            time.sleep(0.02)
        return lines

    def test_a_change_committed_by_one_runner_is_seen_by_another_next_tick(
            self):
        self.run_runner('setup', 'setup')
        seen = os.path.join(self.directory, 'seen')
        watcher = self.start('watch', 'watcher', seen)
        self.assertEqual(['None'] * 2, self.wait_for_lines(seen, 2)[:2])
        self.run_runner('set', 'writer', 'changed')
        # The tick running now may have begun before the commit; the one
        # after it began after the commit.
        ticks = len(self.lines(seen))
        lines = self.wait_for_lines(seen, ticks + 2)
        self.assertEqual("'changed'", lines[ticks + 1])
        self.assertEqual("'changed'", lines[-1])
        watcher.send_signal(signal.SIGTERM)
        self.wait('watcher', watcher)
        self.assertIn('Received signal 15, terminating.', self.log('watcher'))


class ScaleTest(ZEOTest):
    """Processes that conflict on every tick lose no update."""

    TICKS = 15

    def run_processes(self, count):
        names = [f'counter-{i}' for i in range(count)]
        self.run_runner('setup', 'setup', *names)
        processes = [self.start('count', name, name, self.TICKS,
                                self.directory)
                     for name in names]
        ready = [os.path.join(self.directory, f'ready-{name}')
                 for name in names]
        deadline = time.monotonic() + 120
        while not all(os.path.exists(path) for path in ready):
            self.assertLess(time.monotonic(), deadline,
                            'The counters did not start.')
            self.assertTrue(all(p.poll() is None for p in processes),
                            'A counter exited before it was ready.')
            time.sleep(0.02)
        open(os.path.join(self.directory, 'go'), 'w').close()
        for name, process in zip(names, processes):
            self.wait(name, process)
        data = self.open()
        counts = {name: c.value for name, c in data['counts'].items()}
        self.assertEqual(dict.fromkeys(names, self.TICKS), counts)
        self.assertEqual(count * self.TICKS, data['shared'].value)
        tokens = list(data['tokens'].values())
        self.assertEqual(count * self.TICKS, len(tokens))
        for name in names:
            self.assertEqual(self.TICKS, tokens.count(name))
        # Each conflicted tick, aborted and done again, is one WARNING.
        return sum(
            self.log(name).count(
                'WARNING gocept.runner.runner Conflict in worker count')
            for name in names)

    def test_4_processes(self):
        self.assertGreater(self.run_processes(4), 0)

    def test_8_processes(self):
        self.assertGreater(self.run_processes(8), 0)
