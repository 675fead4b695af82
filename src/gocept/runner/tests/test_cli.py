"""The console scripts, run as the installed programs in subprocesses."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import zc.lockfile
import ZODB
import ZODB.FileStorage

import gocept.runner.arguments
import gocept.runner.tests.workers
from gocept.runner import testing


BIN = os.path.dirname(sys.executable)
HERE = os.path.dirname(gocept.runner.__file__)
WORKERS = gocept.runner.tests.workers.__name__

# What pip writes for a console_scripts entry point.
WRAPPER = """\
#!{python}
import sys
from {module} import {name}
if __name__ == '__main__':
    sys.exit({name}())
"""

CONF = """\
site-definition {site}
<zodb>
  <filestorage>
    path {path}
  </filestorage>
</zodb>
<eventlog>
  <logfile>
    path {log}
  </logfile>
</eventlog>
"""


class CommandLineTest(unittest.TestCase):
    layer = testing.SubprocessLayer

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.data_fs = self.path('Data.fs')
        self.conf = self.write_conf('zope.conf')

    def path(self, *names):
        return os.path.join(self.dir, *names)

    def write(self, name, text):
        with open(self.path(name), 'w') as f:
            f.write(text)
        return self.path(name)

    def write_conf(self, name, site=None, **kw):
        return self.write(name, CONF.format(
            site=site or os.path.join(HERE, 'ftesting.zcml'),
            path=self.data_fs, log=self.path('log'), **kw))

    def script(self, name):
        """The wrapper pip would install for the worker `name`."""
        path = self.path(name)
        if not os.path.exists(path):
            self.write(name, WRAPPER.format(
                python=sys.executable, module=WORKERS, name=name))
            os.chmod(path, 0o755)
        return path

    def run_script(self, *args, env=None):
        """Run a program in the test's directory; return its result."""
        program = args[0]
        if os.sep not in program:
            program = os.path.join(BIN, program)
        if env is not None:
            env = dict(os.environ, **env)
        return subprocess.run(
            [program, *args[1:]], cwd=self.dir, env=env,
            capture_output=True, text=True, timeout=60)

    def assertError(self, result, status, *fragments):
        """`result` is `status` and one line on stderr with `fragments`."""
        self.assertEqual(status, result.returncode, result.stderr)
        lines = result.stderr.splitlines()
        self.assertEqual(1, len(lines), result.stderr)
        for fragment in fragments:
            self.assertIn(fragment, lines[0])

    _database = None

    def make_database(self):
        """Make Data.fs a database with a root folder; return its bytes."""
        cls = CommandLineTest
        if cls._database is None:
            result = self.run_script(
                'gocept-runner', '-C', self.conf, '--once',
                f'{WORKERS}:count')
            self.assertEqual(0, result.returncode, result.stderr)
            cls._database = self.data_fs_bytes()
        with open(self.data_fs, 'wb') as f:
            f.write(cls._database)
        return cls._database

    def data_fs_bytes(self):
        with open(self.data_fs, 'rb') as f:
            return f.read()

    def count(self):
        """The count the workers keep in the database."""
        db = ZODB.DB(ZODB.FileStorage.FileStorage(self.data_fs))
        try:
            with db.transaction() as connection:
                return connection.root().get('count')
        finally:
            db.close()


class GoceptRunnerTest(CommandLineTest):
    """gocept-runner MODULE:FUNCTION"""

    def test_without_config_uses_var_Data_fs(self):
        for expected in 1, 2:
            result = self.run_script(
                'gocept-runner', '--once', f'{WORKERS}:count')
            self.assertEqual(0, result.returncode, result.stderr)
            self.assertEqual(f'count {expected}\n', result.stdout)
        self.data_fs = self.path('var', 'Data.fs')
        self.assertEqual(2, self.count())

    def test_environment_variable_names_the_config(self):
        result = self.run_script(
            'gocept-runner', '--once', f'{WORKERS}:count',
            env={'GOCEPT_RUNNER_CONFIG': self.conf})
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual(1, self.count())
        self.assertFalse(os.path.exists(self.path('var')))

    def test_once_whose_tick_fails_exits_1(self):
        result = self.run_script(
            'gocept-runner', '-C', self.conf, '--once', f'{WORKERS}:fail')
        self.assertEqual(1, result.returncode)
        self.assertEqual('', result.stderr)
        with open(self.path('log')) as f:
            self.assertIn('ValueError: the worker failed', f.read())

    def test_worker_SystemExit_code_is_the_exit_status(self):
        result = self.run_script(
            'gocept-runner', '-C', self.conf, f'{WORKERS}:exit_3')
        self.assertEqual(3, result.returncode, result.stderr)

    def test_SIGTERM_stops_the_loop_with_status_0(self):
        proc = subprocess.Popen(
            [os.path.join(BIN, 'gocept-runner'), '-C', self.conf,
             '--ticks', '3600', f'{WORKERS}:count'],
            cwd=self.dir, stdout=subprocess.PIPE, text=True)
        self.addCleanup(proc.stdout.close)
        self.assertEqual('count 1\n', proc.stdout.readline())
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(0, proc.wait(timeout=60))
        self.assertEqual(1, self.count())

    def test_principal(self):
        result = self.run_script(
            'gocept-runner', '-C', self.conf, '--once',
            '--principal', 'zope.mgr', f'{WORKERS}:count')
        self.assertEqual(0, result.returncode, result.stderr)

    def test_python_m_gocept_runner_is_the_same_command(self):
        result = self.run_script(
            sys.executable, '-m', 'gocept.runner', '-C', self.conf,
            '--once', f'{WORKERS}:count')
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual(1, self.count())

    def test_debug_shows_the_traceback(self):
        result = self.run_script(
            'gocept-runner', '--debug', '--once', 'nosuchmodule:work')
        self.assertEqual(2, result.returncode)
        self.assertIn('Traceback (most recent call last)', result.stderr)
        self.assertIn('ModuleNotFoundError', result.stderr)
        self.assertTrue(result.stderr.splitlines()[-1].startswith(
            'gocept-runner: Cannot import nosuchmodule'))


class DecoratedWorkerTest(CommandLineTest):
    """A decorated worker called with no arguments is a program."""

    def test_help_shows_the_docstring(self):
        result = self.run_script(self.script('count_to_3'), '--help')
        self.assertEqual(0, result.returncode)
        self.assertIn('usage: count_to_3 [-h] [-C PATH]', result.stdout)
        self.assertIn('Count to three in the database, then stop.\n\n'
                      'A decorated worker, run as a program.',
                      result.stdout)

    def test_version(self):
        result = self.run_script(self.script('count_to_3'), '--version')
        self.assertEqual(0, result.returncode)
        self.assertRegex(
            result.stdout, r'^count_to_3 \(gocept.runner [^ ]+\)\n$')

    def test_version_of_another_distribution(self):
        # The console script "zope-testrunner" belongs to zope.testrunner.
        self.assertRegex(
            gocept.runner.arguments.version('zope-testrunner'),
            r'^zope-testrunner \(zope.testrunner [^ ]+,'
            r' gocept.runner [^ ]+\)$')

    def test_runs_until_Exit(self):
        result = self.run_script(self.script('count_to_3'), '-C', self.conf)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual('count 1\ncount 2\ncount 3\n', result.stdout)

    def test_config_from_the_environment_variable(self):
        result = self.run_script(
            self.script('count_to_3'), env={'GOCEPT_RUNNER_CONFIG': self.conf})
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual(3, self.count())

    def test_no_config_is_a_usage_error(self):
        env = dict(os.environ)
        env.pop('GOCEPT_RUNNER_CONFIG', None)
        result = subprocess.run(
            [self.script('count_to_3')], cwd=self.dir, env=env,
            capture_output=True, text=True, timeout=60)
        self.assertError(
            result, 2, 'count_to_3: no zope.conf: give -C/--config or set'
            ' $GOCEPT_RUNNER_CONFIG')

    def test_site(self):
        self.make_database()
        result = self.run_script(
            self.script('count_to_3'), '-C', self.conf, '--site', 'nosuch')
        self.assertError(result, 2, "Unknown site 'nosuch'")

    def test_once_whose_tick_fails_exits_1(self):
        result = self.run_script(self.script('once_failing'), '-C', self.conf)
        self.assertEqual(1, result.returncode, result.stderr)
        self.assertEqual('failing\n', result.stdout)

    def test_called_with_site_and_config_it_returns(self):
        result = self.run_script(sys.executable, '-c', (
            f'from {WORKERS} import count_to_3\n'
            f'print(count_to_3(None, zope_conf={self.conf!r}))\n'
            'try:\n'
            f'    count_to_3("nosuch", {self.conf!r})\n'
            'except KeyError as e:\n'
            '    print(e)\n'))
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual(
            "count 1\ncount 2\ncount 3\nNone\nUnknown site 'nosuch': the"
            " root folder has no item of that name\n",
            result.stdout)

    def test_called_with_one_argument(self):
        with self.assertRaisesRegex(TypeError, 'takes appname and'):
            gocept.runner.tests.workers.count_to_3(None)
        with self.assertRaisesRegex(TypeError, 'takes appname and'):
            gocept.runner.tests.workers.count_to_3(zope_conf=self.conf)

    def test_runexample(self):
        result = self.run_script('runexample', '--help')
        self.assertIn('Count ticks in the database', result.stdout)
        self.assertIn('example.conf', result.stdout)
        self.assertFalse(os.path.exists(self.path('var')))
        conf = self.write('example.conf', CONF.format(
            site=os.path.join(HERE, 'minimal.zcml'), path=self.data_fs,
            log='STDOUT') + (
                '<product-config example>\n'
                '  greeting Hello from the test\n'
                '</product-config>\n'))
        result = self.run_script('runexample', '-C', conf)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertIn('Hello from the test: tick 5', result.stdout)


class LockTest(CommandLineTest):
    """--lock-file and the lock_file argument of the decorators."""

    def test_a_second_run_exits_75_naming_lock_and_holder(self):
        lock = zc.lockfile.LockFile(self.path('cron.lock'))
        self.addCleanup(lock.close)
        result = self.run_script(
            'gocept-runner', '-C', self.conf, '--once',
            '--lock-file', 'cron.lock', f'{WORKERS}:count')
        self.assertError(
            result, 75, 'gocept-runner: Another run holds the lock file'
            f' cron.lock (pid {os.getpid()})')
        self.assertFalse(os.path.exists(self.data_fs))

    def test_decorator_argument(self):
        result = self.run_script(self.script('once_locked'), '-C', self.conf)
        self.assertEqual(0, result.returncode, result.stderr)
        with open(self.path('once.lock')) as f:
            self.assertRegex(f.read(), r'^ \d+\n$')
        lock = zc.lockfile.LockFile(self.path('once.lock'))
        self.addCleanup(lock.close)
        result = self.run_script(self.script('once_locked'), '-C', self.conf)
        self.assertError(result, 75, 'once.lock', f'(pid {os.getpid()})')
        result = self.run_script(sys.executable, '-c', (
            f'from {WORKERS} import once_locked\n'
            f'once_locked(None, {self.conf!r})\n'))
        self.assertIn(
            'gocept.runner.lock.AlreadyRunning: Another run holds the lock'
            ' file once.lock', result.stderr)
        self.assertEqual(1, self.count())

    def test_lock_file_in_a_missing_directory(self):
        result = self.run_script(
            'gocept-runner', '-C', self.conf, '--once',
            '--lock-file', 'nosuchdir/cron.lock', f'{WORKERS}:count')
        self.assertError(
            result, 2, 'Cannot open the lock file nosuchdir/cron.lock')


class BadInputTest(CommandLineTest):
    """One line on stderr, the right status, the database untouched."""

    def assertRefused(self, status, *fragments, args=(), conf=None,
                      function='count'):
        """Run gocept-runner on an existing database: it is refused."""
        before = self.make_database()
        result = self.run_script(
            'gocept-runner', '-C', conf or self.conf, '--once', *args,
            f'{WORKERS}:{function}')
        self.assertError(result, status, *fragments)
        self.assertEqual(before, self.data_fs_bytes())

    def test_config_file_missing(self):
        self.assertRefused(
            2, 'gocept-runner: Configuration file not found: nosuch.conf',
            conf='nosuch.conf')

    def test_config_file_unreadable(self):
        os.chmod(self.dir, 0o755)
        os.chmod(self.conf, 0)
        args = ['-C', self.conf, '--once', f'{WORKERS}:count']
        if os.geteuid() != 0:
            result = self.run_script('gocept-runner', *args)
        else:
            # root reads any file: run as nobody, once all is imported (the
            # checkout and the Python of the tests may be in a directory
            # nobody cannot read), and back to root for what runs at exit
            # (coverage, say).
            result = self.run_script(sys.executable, '-c', (
                'import locale, os, sys, gocept.runner.cli;'
                f' import {WORKERS};'
                ' os.setegid(65534); os.seteuid(65534);'
                ' status = gocept.runner.cli.main(sys.argv[1:]);'
                ' os.seteuid(0); os.setegid(0);'
                ' sys.exit(status)'), *args)
        self.assertError(
            result, 2, f'gocept-runner: Cannot read configuration file'
            f' {self.conf}: Permission denied')
        self.assertFalse(os.path.exists(self.data_fs))

    def test_config_syntax_error(self):
        conf = self.write('bad.conf', '<zodb>\n  <filestorage>\n')
        self.assertRefused(
            2, f'Invalid configuration file {conf}, line 2:'
            ' unclosed sections not allowed', conf=conf)

    def test_config_schema_error(self):
        conf = self.write_conf('bad.conf')
        with open(conf, 'a') as f:
            f.write('no-such-key 1\n')
        self.assertRefused(
            2, f'Invalid configuration file {conf}, line 12:'
            " 'no-such-key' is not a known key name", conf=conf)

    def test_site_definition_missing(self):
        conf = self.write_conf('bad.conf', site='nosuch.zcml')
        self.assertRefused(
            2, f'Cannot find the site ZCML nosuch.zcml (site-definition of'
            f' {conf}): {self.path("nosuch.zcml")} does not exist',
            conf=conf)

    def test_zcml_error(self):
        self.write('site.zcml', (
            '<configure xmlns="http://namespaces.zope.org/zope">\n'
            '  <include package="zope.component" file="meta.zcml" />\n'
            '  <utility component="nosuch.thing" />\n'
            '</configure>\n'))
        conf = self.write_conf('bad.conf', site='site.zcml')
        self.assertRefused(
            2, 'Error in the site ZCML:',
            f'File "{self.path("site.zcml")}", line 3.',
            "Couldn't import nosuch", conf=conf)

    def test_zcml_syntax_error(self):
        self.write('site.zcml', '<configure>\n  <oops\n</configure>\n')
        conf = self.write_conf('bad.conf', site='site.zcml')
        self.assertRefused(
            2, f'Error in the site ZCML: {self.path("site.zcml")}:3:0:',
            conf=conf)

    def test_site_zcml_without_bootstrap(self):
        self.write('site.zcml', (
            '<configure xmlns="http://namespaces.zope.org/zope">\n'
            '  <include package="zope.component" file="meta.zcml" />\n'
            '</configure>\n'))
        conf = self.write_conf('bad.conf', site='site.zcml')
        db = ZODB.DB(ZODB.FileStorage.FileStorage(self.data_fs))
        db.close()
        before = self.data_fs_bytes()
        result = self.run_script(
            'gocept-runner', '-C', conf, '--once', f'{WORKERS}:count')
        self.assertError(
            result, 2, "The database has no root folder 'Application'",
            'zope.app.appsetup', 'bootStrapSubscriber')
        self.assertEqual(before, self.data_fs_bytes())

    def test_unknown_site(self):
        self.assertRefused(
            2, "gocept-runner: Unknown site 'nosuch'", args=['-s', 'nosuch'])

    def test_unknown_principal(self):
        self.assertRefused(
            2, "gocept-runner: Unknown principal 'nobody'",
            args=['--principal', 'nobody'])

    def test_FileStorage_locked_by_another_process(self):
        before = self.make_database()
        storage = ZODB.FileStorage.FileStorage(self.data_fs)
        self.addCleanup(storage.close)
        result = self.run_script(
            'gocept-runner', '-C', self.conf, '--once', f'{WORKERS}:count')
        self.assertError(
            result, 75, f'Cannot open the database ({self.data_fs}):'
            f' another process (pid {os.getpid()}) has it open, holding its'
            f' lock file {self.data_fs}.lock')
        storage.close()
        self.assertEqual(before, self.data_fs_bytes())

    def test_ZEO_server_unreachable(self):
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            port = s.getsockname()[1]
        conf = self.write('zeo.conf', (
            '%import ZEO\n'
            f'site-definition {HERE}/ftesting.zcml\n'
            '<zodb>\n'
            '  <clientstorage>\n'
            f'    server 127.0.0.1:{port}\n'
            '    wait-timeout 1\n'
            '  </clientstorage>\n'
            '</zodb>\n'
            '<eventlog>\n'
            '</eventlog>\n'))
        start = time.monotonic()
        result = self.run_script(
            'gocept-runner', '-C', conf, '--once', f'{WORKERS}:count')
        self.assertError(
            result, 1, 'Cannot open the database',
            'timed out waiting for connection', 'is its server running?')
        # ZEO waits wait-timeout (1 s) before it gives up, not its default
        # of 30 s.
        self.assertLess(time.monotonic() - start, 20)

    def test_module_not_importable(self):
        result = self.run_script('gocept-runner', '--once', 'nosuchmod:work')
        self.assertError(
            result, 2, 'gocept-runner: Cannot import nosuchmod:'
            " ModuleNotFoundError: No module named 'nosuchmod'")
        self.assertFalse(os.path.exists(self.path('var')))

    def test_function_missing(self):
        self.assertRefused(
            2, f'gocept-runner: {WORKERS} has no nosuch', function='nosuch')

    def test_function_not_callable(self):
        self.assertRefused(
            2, f'gocept-runner: {WORKERS}:not_callable is not callable',
            function='not_callable')

    def test_not_module_colon_function(self):
        result = self.run_script('gocept-runner', 'count')
        self.assertError(
            result, 2, "'count' is not of the form MODULE:FUNCTION")
        self.assertFalse(os.path.exists(self.path('var')))

    def test_bad_ticks(self):
        result = self.run_script(
            'gocept-runner', '--ticks', 'soon', f'{WORKERS}:count')
        self.assertError(
            result, 2, "argument --ticks: 'soon' is not a number of seconds")
        self.assertFalse(os.path.exists(self.path('var')))
