"""Mistakes and faults at start-up: one line, the right status, nothing
touched.

Each test runs the installed console scripts in a subprocess against a real
FileStorage (or a ZEO address), as an operator would.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import ZODB.FileStorage
import ZODB.FileStorage.format
import zope.component.hooks

import gocept.runner
import gocept.runner.lock
from gocept.runner import testing
from gocept.runner.config import ConfigurationError
from gocept.runner.tests.test_cli import BIN
from gocept.runner.tests.test_cli import HERE
from gocept.runner.tests.test_cli import WORKERS
from gocept.runner.tests.test_cli import WRAPPER
from gocept.runner.tests.test_cli import CommandLineTest


MODULE = __name__


# Workers of the tests below, run by the console scripts.

@gocept.runner.once(
    principal=gocept.runner.from_config('runner', 'principal'))
def once_as_configured():
    """Count once, as the principal <product-config runner> names."""
    root = zope.component.hooks.getSite()._p_jar.root()
    root['count'] = root.get('count', 0) + 1


def fork_and_wait():
    """Fork a child that ends with SystemExit outside the main loop's
    reach; say so when it is gone, then go on ticking."""
    pid = os.fork()
    if pid == 0:
        # As if the child came back into code that ends the run.
        raise SystemExit(0)
    os.waitpid(pid, 0)
    print('child gone', flush=True)


# A process that holds a lock file until its standard input closes.
HOLD_LOCK = """\
import sys, zc.lockfile
lock = zc.lockfile.LockFile(sys.argv[1])
print('locked', flush=True)
sys.stdin.read()
"""


# A process that takes a lock, forks a child that leaves the block with
# SystemExit, then tells whether a third process can take the lock.
FORK_IN_LOCK = """\
import os, subprocess, sys, zc.lockfile
from gocept.runner import lock
TAKE = "import zc.lockfile; zc.lockfile.LockFile('run.lock')"
with lock.locked('run.lock'):
    pid = os.fork()
    if pid == 0:
        sys.exit(0)
    os.waitpid(pid, 0)
    taken = subprocess.run([sys.executable, '-c', TAKE], capture_output=True)
    print(taken.returncode)
zc.lockfile.LockFile('run.lock')
print('released')
"""


class StartupTest(CommandLineTest):

    def run_runner(self, *args, conf=None, env=None):
        return self.run_script(
            'gocept-runner', '-C', conf or self.conf, '--once', *args,
            f'{WORKERS}:count', env=env)

    def program(self, name):
        """The console-script wrapper of the worker `name` of this module."""
        path = self.path(name)
        self.write(name, WRAPPER.format(
            python=sys.executable, module=MODULE, name=name))
        os.chmod(path, 0o755)
        return path

    def hold_lock(self, path):
        """Hold the lock file `path` in another process; return its pid."""
        proc = subprocess.Popen(
            [sys.executable, '-c', HOLD_LOCK, path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.addCleanup(proc.wait, timeout=60)
        self.addCleanup(proc.stdout.close)
        self.addCleanup(proc.stdin.close)
        self.assertEqual('locked\n', proc.stdout.readline())
        return proc.pid

    def read(self, name):
        with open(self.path(name), 'rb') as f:
            return f.read()


class LockFileTest(StartupTest):
    """--lock-file and the decorators' lock_file never destroy a file."""

    def test_lock_file_naming_the_database_is_refused(self):
        before = self.make_database()
        result = self.run_runner('--lock-file', 'Data.fs')
        self.assertError(
            result, 2, 'gocept-runner: The lock file Data.fs is not a lock'
            ' file')
        self.assertEqual(before, self.data_fs_bytes())
        self.assertEqual(1, self.count())

    def test_lock_file_of_the_decorator_naming_a_database_is_refused(self):
        # once_locked holds ./once.lock; here it is a copy of a database.
        before = self.make_database()
        shutil.copy(self.data_fs, self.path('once.lock'))
        script = self.script('once_locked')
        result = self.run_script(script, '-C', self.conf)
        self.assertError(result, 2, 'The lock file once.lock is not a lock')
        self.assertEqual(before, self.read('once.lock'))
        self.assertEqual(before, self.data_fs_bytes())

    def test_text_file_is_refused(self):
        self.write('notes.txt', 'Do not delete: the cron lock goes here.\n')
        result = self.run_runner('--lock-file', 'notes.txt')
        self.assertError(result, 2, 'notes.txt is not a lock file')
        self.assertEqual(b'Do not delete: the cron lock goes here.\n',
                         self.read('notes.txt'))
        self.assertFalse(os.path.exists(self.data_fs))

    def test_empty_file_and_old_lock_files_are_used(self):
        # Empty, as left by a full disk; written by zc.lockfile; with a
        # host name, as ZODB may write; a shorter pid over a longer one
        # whose writer was killed before it truncated the file.
        for old in '', ' 4242\n', ' 4242;host\n', ' 42\n42\n':
            self.write('run.lock', old)
            result = self.run_runner('--lock-file', 'run.lock')
            self.assertEqual(0, result.returncode, result.stderr)
            self.assertRegex(self.read('run.lock').decode(), r'^ \d+\n$')
        self.assertEqual(4, self.count())

    def test_directory_is_refused(self):
        os.mkdir(self.path('run.lock'))
        result = self.run_runner('--lock-file', 'run.lock')
        self.assertError(result, 2, 'Cannot open the lock file run.lock')
        self.assertFalse(os.path.exists(self.data_fs))

    def test_device_is_refused(self):
        result = self.run_runner('--lock-file', os.devnull)
        self.assertError(result, 2, f'The lock file {os.devnull} is not a')
        self.assertFalse(os.path.exists(self.data_fs))

    def test_lock_of_another_process_is_75_naming_it_and_the_pid(self):
        pid = self.hold_lock(self.path('run.lock'))
        result = self.run_runner('--lock-file', 'run.lock')
        self.assertError(
            result, 75, 'Another run holds the lock file run.lock'
            f' (pid {pid})')
        self.assertFalse(os.path.exists(self.data_fs))

    def test_storage_lock_of_another_process_is_75_naming_the_pid(self):
        before = self.make_database()
        pid = self.hold_lock(self.data_fs + '.lock')
        result = self.run_runner()
        self.assertError(
            result, 75, f'Cannot open the database ({self.data_fs}):'
            f' another process (pid {pid}) has it open, holding its lock'
            f' file {self.data_fs}.lock')
        self.assertEqual(before, self.data_fs_bytes())

    def test_lock_file_naming_the_storage_lock_is_2(self):
        # The runner takes the lock, then its own FileStorage cannot.
        before = self.make_database()
        result = self.run_runner('--lock-file', 'Data.fs.lock')
        self.assertError(
            result, 2, f'Cannot open the database ({self.data_fs}): this'
            f' process holds its lock file {self.data_fs}.lock already')
        self.assertEqual(before, self.data_fs_bytes())

    def test_two_zodb_sections_on_one_file_is_2(self):
        before = self.make_database()
        storage = (f'  <filestorage>\n    path {self.data_fs}\n'
                   '  </filestorage>\n')
        conf = self.write('two.conf', (
            f'site-definition {HERE}/ftesting.zcml\n'
            f'<zodb>\n{storage}</zodb>\n'
            f'<zodb other>\n{storage}</zodb>\n'
            '<eventlog>\n</eventlog>\n'))
        result = self.run_runner(conf=conf)
        self.assertError(
            result, 2, "Cannot open the database 'other'",
            'this process holds its lock file')
        self.assertEqual(before, self.data_fs_bytes())

    def test_lock_this_process_holds_is_a_configuration_error(self):
        path = self.path('run.lock')
        with gocept.runner.lock.locked(path):
            with self.assertRaises(ConfigurationError) as err:
                with gocept.runner.lock.locked(path):
                    pass
            self.assertEqual(
                f'This process holds the lock file {path} already',
                str(err.exception))
        # Released when the outer block ended.
        with gocept.runner.lock.locked(path):
            pass

    def test_forked_child_leaving_the_block_keeps_the_lock(self):
        result = self.run_script(sys.executable, '-c', FORK_IN_LOCK)
        self.assertEqual(0, result.returncode, result.stderr)
        # The child left the block, the lock was still held (the third
        # process failed), and the parent released it.
        self.assertEqual('1\nreleased\n', result.stdout)

    def test_forked_child_of_a_worker_keeps_locks_of_the_run(self):
        first = subprocess.Popen(
            [os.path.join(BIN, 'gocept-runner'), '-C', self.conf,
             '--ticks', '3600', '--lock-file', 'run.lock',
             f'{MODULE}:fork_and_wait'],
            cwd=self.dir, stdout=subprocess.PIPE, text=True)
        self.addCleanup(first.stdout.close)
        self.addCleanup(first.kill)
        self.assertEqual('child gone\n', first.stdout.readline())
        result = self.run_runner('--lock-file', 'run.lock')
        self.assertError(result, 75, f'(pid {first.pid})')
        result = self.run_runner('--lock-file', 'other.lock')
        self.assertError(result, 75, f'another process (pid {first.pid})')
        first.terminate()
        self.assertEqual(0, first.wait(timeout=60))


class OptionTest(StartupTest):
    """Every option value is used or is one usage line (status 2)."""

    def assertUsageError(self, result, *fragments):
        self.assertError(result, 2, *fragments)
        self.assertTrue(result.stderr.endswith('(see --help)\n'))
        self.assertFalse(os.path.exists(self.path('var')))
        self.assertFalse(os.path.exists(self.data_fs))

    def test_empty_values(self):
        options = [('-C', '-C/--config'), ('--config', '-C/--config'),
                   ('-s', '-s/--site'), ('--lock-file', '--lock-file'),
                   ('--principal', '--principal'),
                   ('--heartbeat', '--heartbeat')]
        for option, name in options:
            with self.subTest(option=option):
                result = self.run_script(
                    'gocept-runner', '--once', option, '',
                    f'{WORKERS}:count')
                self.assertUsageError(
                    result, f'argument {name}: must not be empty')
        result = self.run_script(self.script('count_to_3'), '-C', '')
        self.assertUsageError(
            result, 'count_to_3: argument -C/--config: must not be empty')

    def test_empty_config_variable(self):
        # Set from an unset shell variable, say: not a reason to run on the
        # default ./var/Data.fs.
        for args in (['gocept-runner', '--once', f'{WORKERS}:count'],
                     [self.script('count_to_3')]):
            with self.subTest(program=args[0]):
                result = self.run_script(
                    *args, env={'GOCEPT_RUNNER_CONFIG': ''})
                self.assertUsageError(
                    result, '$GOCEPT_RUNNER_CONFIG is empty: name a zope.conf'
                    ' or unset it')

    def test_seconds_beyond_a_year_or_not_finite(self):
        for option in '--ticks', '--max-runtime':
            for value in '1e10', '31536001', 'inf', '-inf', 'nan', '-1':
                with self.subTest(option=option, value=value):
                    result = self.run_script(
                        'gocept-runner', f'{option}={value}',
                        f'{WORKERS}:count')
                    self.assertUsageError(
                        result, f"argument {option}: '{value}' is not a"
                        ' number of seconds from 0 to a year')

    def test_a_year_is_accepted(self):
        result = self.run_runner('--max-runtime', '31536000', '--ticks',
                                 '31536000')
        self.assertEqual(0, result.returncode, result.stderr)

    def test_bad_sizes(self):
        for value in 'inf', 'infG', '-inf', 'nan', '1e400', '-1', '0', 'lots':
            with self.subTest(value=value):
                result = self.run_script(
                    'gocept-runner', f'--max-memory={value}',
                    f'{WORKERS}:count')
                self.assertUsageError(
                    result, f"argument --max-memory: '{value}' is not a size"
                    ' in bytes')

    def test_help_does_not_depend_on_the_terminal(self):
        # A long path with hyphens, as a deep checkout has.
        config = os.path.join(
            self.dir, *['a-rather-long-directory-name'] * 4, 'example.conf')
        outputs = []
        for columns in '30', '78', '250':
            result = self.run_script(
                'gocept-runner', '--help',
                env={'COLUMNS': columns, 'GOCEPT_RUNNER_CONFIG': config})
            self.assertEqual(0, result.returncode, result.stderr)
            outputs.append(result.stdout)
        self.assertEqual(outputs[0], outputs[1])
        self.assertEqual(outputs[0], outputs[2])
        self.assertIn(f'which is\n{" " * 24}{config})', outputs[0])
        for line in outputs[0].splitlines():
            if config not in line:
                self.assertLessEqual(len(line), 78, line)


class ConfigurationTest(StartupTest):
    """Mistakes in zope.conf: one line naming it, status 2."""

    def assertRefused(self, result, *fragments, status=2):
        self.assertError(result, status, *fragments)
        self.assertNotIn('Traceback', result.stderr)

    def test_not_UTF_8(self):
        before = self.make_database()
        with open(self.conf, 'rb') as f:
            text = f.read()
        with open(self.path('latin1.conf'), 'wb') as f:
            f.write(b'# Konfiguration f\xfcr den Runner\n' + text)
        result = self.run_runner(conf='latin1.conf')
        self.assertRefused(
            result, 'Invalid configuration file latin1.conf, line 1: not'
            ' UTF-8 text (byte 0xfc)')
        self.assertEqual(before, self.data_fs_bytes())

    def test_a_directory(self):
        os.mkdir(self.path('zope.d'))
        result = self.run_runner(conf='zope.d')
        self.assertRefused(
            result, 'Configuration file zope.d is a directory, not a file')

    def test_zodb_without_storage(self):
        conf = self.write('nostorage.conf', (
            f'site-definition {HERE}/ftesting.zcml\n'
            '<zodb main>\n</zodb>\n<eventlog>\n</eventlog>\n'))
        result = self.run_runner(conf=conf)
        self.assertRefused(
            result, f'Invalid configuration file {conf}: <zodb main> has no'
            ' storage section')

    def test_Data_fs_that_is_not_a_FileStorage(self):
        shutil.copy(self.conf, self.data_fs)
        before = self.data_fs_bytes()
        result = self.run_runner()
        self.assertRefused(
            result, f'Cannot open the database ({self.data_fs}): the file'
            ' is not a FileStorage')
        self.assertEqual(before, self.data_fs_bytes())

    def test_Data_fs_with_garbage_in_its_root_object(self):
        # Right in structure, garbage where the root object's state is.
        self.make_database()
        storage = ZODB.FileStorage.FileStorage(self.data_fs, read_only=True)
        root_records = [(record.pos, len(record.data))
                        for txn in storage.iterator() for record in txn
                        if record.oid == b'\0' * 8]
        storage.close()
        if os.path.exists(self.data_fs + '.index'):
            os.remove(self.data_fs + '.index')
        position, length = root_records[-1]
        data_position = position + ZODB.FileStorage.format.DATA_HDR_LEN
        with open(self.data_fs, 'r+b') as f:
            f.seek(data_position)
            f.write(b'\xff' * length)
        before = self.data_fs_bytes()
        result = self.run_runner()
        self.assertRefused(
            result, f'gocept-runner: Cannot open the database'
            f' ({self.data_fs}):')
        self.assertEqual(before, self.data_fs_bytes())

    def test_eventlog_in_a_missing_directory(self):
        conf = self.write('bad.conf', (
            f'site-definition {HERE}/ftesting.zcml\n'
            f'<zodb>\n  <filestorage>\n    path {self.data_fs}\n'
            '  </filestorage>\n</zodb>\n'
            '<eventlog>\n  <logfile>\n    path nosuchdir/event.log\n'
            '  </logfile>\n</eventlog>\n'))
        result = self.run_runner(conf=conf)
        self.assertRefused(
            result, f'Invalid configuration file {conf}: the directory of'
            ' the log file nosuchdir/event.log does not exist')
        self.assertFalse(os.path.exists(self.data_fs))

    def test_principal_from_missing_product_config(self):
        program = self.program('once_as_configured')
        result = self.run_script(program, '-C', self.conf)
        self.assertRefused(
            result, 'once_as_configured: zope.conf has no <product-config'
            " runner> (asked for its key 'principal')")
        conf = self.read('zope.conf').decode()
        self.write('section.conf', (
            conf +
            '<product-config runner>\n  user zope.mgr\n</product-config>\n'))
        result = self.run_script(program, '-C', 'section.conf')
        self.assertRefused(
            result, "<product-config runner> has no key 'principal' in"
            ' zope.conf')
        self.write('key.conf', (
            conf +
            '<product-config runner>\n  principal zope.mgr\n'
            '</product-config>\n'))
        result = self.run_script(program, '-C', 'key.conf')
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual(1, self.count())

    def test_from_config_is_a_KeyError_and_a_ConfigurationError(self):
        error = gocept.runner.config.MissingProductConfiguration('no key')
        self.assertIsInstance(error, KeyError)
        self.assertIsInstance(error, ConfigurationError)
        self.assertEqual('no key', str(error))


class TransientTest(StartupTest):
    """What may pass by itself is status 1, so a supervisor tries again."""

    def test_ZEO_server_nobody_listens_on(self):
        port = testing.free_port()
        conf = self.write('zeo.conf', (
            '%import ZEO\n'
            f'site-definition {HERE}/ftesting.zcml\n'
            '<zodb>\n  <clientstorage>\n'
            f'    server 127.0.0.1:{port}\n    wait-timeout 1\n'
            '  </clientstorage>\n</zodb>\n<eventlog>\n</eventlog>\n'))
        result = self.run_runner(conf=conf)
        self.assertError(
            result, 1, 'gocept-runner: Cannot open the database (ZEO server'
            f' 127.0.0.1:{port}): timed out waiting for connection (is its'
            ' server running?)')


@unittest.skipUnless(hasattr(os, 'geteuid') and os.geteuid() == 0,
                     'mounting a tmpfs needs root')
class FullDiskTest(StartupTest):
    """A full disk at start: status 1, not 2."""

    def setUp(self):
        super().setUp()
        self.disk = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, self.disk)
        mounted = subprocess.run(
            ['mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', self.disk],
            capture_output=True, text=True)
        if mounted.returncode:
            self.skipTest(f'cannot mount a tmpfs: {mounted.stderr.strip()}')
        self.addCleanup(subprocess.run, ['umount', self.disk], check=True)

    def fill(self):
        with open(os.path.join(self.disk, 'ballast'), 'wb', 0) as f:
            try:
                while True:
                    f.write(b'\0' * 4096)
            except OSError:
                pass

    def test_new_Data_fs_on_a_full_disk(self):
        self.data_fs = os.path.join(self.disk, 'Data.fs')
        conf = self.write_conf('full.conf')
        self.fill()
        result = self.run_runner(conf=conf)
        self.assertError(
            result, 1, f'Cannot open the database ({self.data_fs}): No space'
            ' left on device')

    def test_existing_Data_fs_on_a_full_disk(self):
        before = self.make_database()
        shutil.copy(self.data_fs, os.path.join(self.disk, 'Data.fs'))
        self.data_fs = os.path.join(self.disk, 'Data.fs')
        conf = self.write_conf('full.conf')
        self.fill()
        result = self.run_runner(conf=conf)
        self.assertError(result, 1, 'No space left on device')
        self.assertEqual(before, self.data_fs_bytes())

    def test_lock_file_on_a_full_disk(self):
        self.fill()
        lock_file = os.path.join(self.disk, 'run.lock')
        result = self.run_runner('--lock-file', lock_file)
        self.assertError(
            result, 1, f'Cannot open the lock file {lock_file}: No space'
            ' left on device')
        self.assertFalse(os.path.exists(self.data_fs))
        # Nothing but an empty file is left, which the next run takes.
        self.assertEqual(0, os.path.getsize(lock_file))
