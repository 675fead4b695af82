"""Runners on RelStorage, on a real PostgreSQL server."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

from gocept.runner import testing
from gocept.runner.tests import programs
from gocept.runner.tests.test_deployment import HOWTO
from gocept.runner.tests.test_deployment import howto
from gocept.runner.tests.test_deployment import readme_block


class RelStorageTest(unittest.TestCase):

    layer = testing.POSTGRESQL_LAYER

    def setUp(self):
        if self.layer.server is None:
            self.skipTest(self.layer.missing)
        self.server = self.layer.server
        self.dir = tempfile.mkdtemp(prefix='gocept.runner.test.')
        self.addCleanup(shutil.rmtree, self.dir)
        self.dbname = f'test_{uuid.uuid4().hex}'
        self.server.create_database(self.dbname)
        self.addCleanup(self.drop_database)
        self.processes = []
        self.addCleanup(self.kill_processes)

    def drop_database(self):
        if self.server.process is None:
            self.server.start()
        self.server.drop_database(self.dbname)

    def kill_processes(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.communicate()

    def write_zope_conf(self, directory=None, zodb=None):
        """Write zope.conf into `directory`, on our database by default."""
        if zodb is None:
            zodb = self.server.zodb_section(self.dbname)
        return testing.write_zope_conf(
            directory or self.dir, zodb=zodb,
            log=programs.LOG.format(level='DEBUG', log='STDOUT'),
            site_zcml=programs.MINIMAL_ZCML)


class OutageTests(RelStorageTest):
    """A runner outlives its PostgreSQL server going away and coming back."""

    def start(self, ticks):
        self.write_zope_conf()
        process = programs.start(self.dir, 'count', ticks=ticks)
        self.processes.append(process)
        return process

    def committed(self):
        return [int(line.split()[1]) for line in programs.read_report(self.dir)
                if line.startswith('committed ')]

    def wait_for_commits(self, number):
        """Wait until the runner has reported `number` more commits."""
        committed = len(self.committed()) + number
        deadline = time.monotonic() + 30
        while len(self.committed()) < committed:
            self.assertLess(time.monotonic(), deadline, self.output())
            time.sleep(0.02)

    def output(self):
        with open(os.path.join(self.dir, 'output')) as f:
            return f.read()

    def stored_count(self):
        """The count in the database, read by a process of its own."""
        directory = os.path.join(self.dir, 'check')
        os.mkdir(directory)
        result = subprocess.run(
            [sys.executable, '-c', CHECK, self.write_zope_conf(directory)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=True)
        return int(re.search(r'^count=(\d+)$', result.stdout.decode(),
                             re.M).group(1))

    def assert_survived_outage(self, ticks):
        process = self.start(ticks)
        self.wait_for_commits(3)
        self.server.stop()
        programs.wait_for_output(self.output, programs.OUTAGE)
        time.sleep(0.5)
        self.assertIsNone(process.poll())
        self.server.start()
        self.wait_for_commits(3)
        process.send_signal(signal.SIGTERM)
        self.assertEqual(0, process.wait(30))
        output = self.output()
        runner_lines = [line for line in output.splitlines()
                        if ' gocept.runner.' in line]
        warnings = [line for line in runner_lines
                    if line.startswith('WARNING')]
        self.assertEqual(1, len(warnings), output)
        self.assertRegex(
            warnings[0], r'^WARNING gocept.runner.outage Storage unavailable'
            r' \(OperationalError: .*\), transaction of worker count aborted;'
            r' trying again until it is back$')
        self.assertEqual(
            ['INFO gocept.runner.outage Storage available again, worker'
             ' count goes on',
             'INFO gocept.runner.runner Received signal 15, terminating.'],
            [line for line in runner_lines if line.startswith('INFO')])
        # Not a traceback of ours (RelStorage logs its own ERRORs when the
        # server goes away in the middle of a commit).
        self.assertEqual([], [line for line in runner_lines
                              if line.startswith(('ERROR', 'CRITICAL'))])
        # Nothing lost: every count up to the stored one was reported
        # committed, but for one in the commit the server's stop cut short
        # (which may have reached the database or not).
        report = programs.read_report(self.dir)
        self.assertEqual('stopped because signal', report[-1])
        stored = self.stored_count()
        committed = self.committed()
        self.assertEqual(stored, committed[-1])
        self.assertEqual(sorted(set(committed)), committed)
        missing = set(range(1, stored + 1)) - set(committed)
        in_flight = {int(line.split()[1]) for line in report
                     if line.startswith('committing ')} - set(committed)
        self.assertLessEqual(missing, in_flight)
        self.assertLessEqual(len(missing), 1)

    def test_a_sleeping_runner_waits_for_the_server_and_goes_on(self):
        self.assert_survived_outage(ticks=0.2)

    def test_a_busy_runner_waits_for_the_server_and_goes_on(self):
        self.assert_survived_outage(ticks=0)

    def test_a_stop_signal_during_the_outage_exits_at_once(self):
        process = self.start(ticks=0)
        self.wait_for_commits(2)
        self.server.stop()
        # The sixth tick in the outage is followed by a pause of 3.2 s.
        deadline = time.monotonic() + 30
        while self.output().count(': storage unavailable in') < 6:
            self.assertLess(time.monotonic(), deadline, self.output())
            time.sleep(0.01)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        self.assertEqual(0, process.wait(30), self.output()[-3000:])
        self.assertLess(time.monotonic() - started, 2)
        self.assertEqual('stopped because signal',
                         programs.read_report(self.dir)[-1])

    def test_a_worker_whose_read_fails_waits_for_the_server(self):
        # RelStorage's own cache off: the worker's read goes to the server
        # (ZODB logs an ERROR of its own: "Couldn't load state").
        conf = self.write_zope_conf(zodb=self.server.zodb_section(
            self.dbname, cache_local_mb=0))
        hold = os.path.join(self.dir, 'hold')
        open(hold, 'w').close()
        with open(os.path.join(self.dir, 'output'), 'wb') as output:
            process = subprocess.Popen(
                [sys.executable, '-m', 'gocept.runner', '--ticks', '0',
                 '-C', conf,
                 'gocept.runner.tests.relstorageworkers:read_after_hold'],
                stdout=output, stderr=subprocess.STDOUT, cwd=self.dir)
        self.processes.append(process)
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(self.dir, 'holding')):
            self.assertLess(time.monotonic(), deadline, self.output())
            time.sleep(0.02)
        self.server.stop()
        os.remove(hold)
        programs.wait_for_output(self.output, programs.OUTAGE)
        self.server.start()
        programs.wait_for_output(
            self.output,
            'INFO gocept.runner.outage Storage available again')
        programs.wait_for_output(self.output, 'count 3\n')
        process.send_signal(signal.SIGTERM)
        self.assertEqual(0, process.wait(30), self.output())
        output = self.output()
        self.assertRegex(output, r'DEBUG gocept.runner.runner Tick 1 of'
                         r' worker read_after_hold: storage unavailable')
        runner_lines = [line for line in output.splitlines()
                        if ' gocept.runner.' in line]
        self.assertEqual(1, len([line for line in runner_lines
                                 if line.startswith('WARNING')]), output)
        self.assertEqual([], [line for line in runner_lines
                              if line.startswith(('ERROR', 'CRITICAL'))])


CHECK = """\
import sys
from gocept.runner import environment
with environment.application(sys.argv[1]) as root:
    print(f"count={root._p_jar.root()['count']}")
"""


class StartTests(RelStorageTest):

    def run_once(self, directory, worker='started'):
        """Start gocept-runner --once on `directory`'s zope.conf."""
        return subprocess.Popen(
            [sys.executable, '-m', 'gocept.runner', '--once',
             '-C', os.path.join(directory, 'zope.conf'),
             f'gocept.runner.tests.relstorageworkers:{worker}'],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(os.environ, COLUMNS='80'), cwd=directory)

    def test_a_server_down_at_start_is_status_1_naming_host_and_port(self):
        port = testing.free_port()
        self.write_zope_conf(zodb=self.server.zodb_section(
            self.dbname).replace(f'port={self.server.port}', f'port={port}'))
        process = self.run_once(self.dir)
        self.processes.append(process)
        stdout, stderr = process.communicate(timeout=60)
        self.assertEqual(1, process.returncode, stderr)
        lines = stderr.decode().splitlines()
        self.assertEqual(1, len(lines), lines)
        self.assertRegex(
            lines[0], r'^python -m gocept.runner: Cannot open the database:'
            r' OperationalError: connection to server at "127\.0\.0\.1",'
            f' port {port} failed: Connection refused')

    def test_a_missing_database_is_a_configuration_error(self):
        self.write_zope_conf(zodb=self.server.zodb_section('no_such_db'))
        process = self.run_once(self.dir)
        self.processes.append(process)
        stdout, stderr = process.communicate(timeout=60)
        self.assertEqual(2, process.returncode, stderr)
        self.assertIn('database "no_such_db" does not exist', stderr.decode())

    def test_the_examples_of_the_guide(self):
        # The <zodb> sections of docs/howto/relstorage.rst for one host and
        # for several, each with its dsn pointed at the test server's
        # database.
        if not os.path.isdir(HOWTO):
            self.skipTest('docs/ is not beside the package (no checkout)')
        for after in ('RelStorage on PostgreSQL', "On several hosts, each"
                      " runner's zope.conf names the server (put the"):
            zodb = readme_block('%import relstorage', howto('relstorage'),
                                after)
            self.assertIn('dsn ', zodb)
            zodb = re.sub(r'dsn .*', f'dsn {self.server.dsn(self.dbname)}',
                          zodb)
            self.write_zope_conf(zodb=zodb)
            process = self.run_once(self.dir)
            self.processes.append(process)
            stdout, stderr = process.communicate(timeout=60)
            self.assertEqual(0, process.returncode, stderr.decode())
            self.assertIn('started on Folder', stdout.decode())

    def test_runners_started_together_on_a_new_database_all_start(self):
        for trial in range(3):
            if trial:
                self.drop_database()
                self.server.create_database(self.dbname)
            processes = []
            for i in range(8):
                directory = os.path.join(self.dir, f'{trial}-{i}')
                os.mkdir(directory)
                self.write_zope_conf(directory)
                processes.append(self.run_once(directory))
            self.processes.extend(processes)
            for process in processes:
                stdout, stderr = process.communicate(timeout=60)
                self.assertEqual(0, process.returncode, stderr.decode())
                self.assertIn('started on Folder', stdout.decode())


class LayerTests(unittest.TestCase):
    """The PostgreSQL layer runs for anybody, wherever the checkout is."""

    layer = testing.SubprocessLayer

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
