"""A job's own arguments, and a decorated worker run by gocept-runner."""

import os
import sys

import zc.lockfile

from gocept.runner.tests.test_cli import WORKERS
from gocept.runner.tests.test_cli import CommandLineTest


class JobArgumentsTest(CommandLineTest):

    def test_gocept_runner_runs_a_decorated_worker_with_its_settings(self):
        # count_to_3 (appmain, ticks=0.01) stops itself after three ticks.
        result = self.run_script(
            'gocept-runner', '-C', self.conf, f'{WORKERS}:count_to_3')
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual('count 1\ncount 2\ncount 3\n', result.stdout)

    def test_options_override_the_decorators_settings(self):
        result = self.run_script(
            'gocept-runner', '-C', self.conf, f'{WORKERS}:count_to_3',
            '--once')
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual('count 1\n', result.stdout)
        # wait sleeps an hour between ticks: --ticks 0 makes it quick.
        result = self.run_script(
            'gocept-runner', '-C', self.conf, f'{WORKERS}:wait',
            '--ticks', '0', '--max-ticks', '3')
        self.assertEqual(75, result.returncode, result.stderr)
        self.assertEqual('waiting\n' * 3, result.stdout)

    def test_the_decorators_lock_file(self):
        lock = zc.lockfile.LockFile(self.path('once.lock'))
        self.addCleanup(lock.close)
        result = self.run_script(
            'gocept-runner', '-C', self.conf, f'{WORKERS}:once_locked')
        self.assertError(result, 75, 'once.lock')
        result = self.run_script(
            'gocept-runner', '-C', self.conf, f'{WORKERS}:once_locked',
            '--lock-file', 'other.lock')
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual('count 1\n', result.stdout)

    def test_ticks_overrides_a_programs_ticks(self):
        result = self.run_script(
            self.script('wait'), '-C', self.conf, '--ticks', '0',
            '--max-ticks', '2')
        self.assertEqual(75, result.returncode, result.stderr)
        self.assertEqual('waiting\n' * 2, result.stdout)

    def test_a_once_program_has_no_ticks(self):
        result = self.run_script(
            self.script('once_locked'), '-C', self.conf, '--ticks', '0')
        self.assertError(result, 2, 'unrecognized arguments: --ticks (')

    def test_help_is_78_columns_wide(self):
        for args in [(self.script('count_to_3'), '--help'),
                     (self.script('once_locked'), '--help'),
                     ('gocept-runner', '--help')]:
            result = self.run_script(*args, env={'COLUMNS': '200'})
            self.assertEqual(0, result.returncode, result.stderr)
            width = max(map(len, result.stdout.splitlines()))
            self.assertLessEqual(width, 78, result.stdout)
            self.assertGreater(width, 70, result.stdout)

    def test_help_says_what_a_program_does(self):
        result = self.run_script(self.script('count_to_3'), '--help')
        self.assertIn('It runs a tick every 0.01 seconds.', result.stdout)
        result = self.run_script(self.script('once_locked'), '--help')
        self.assertIn('It runs a single tick, holding the lock file'
                      ' once.lock.', result.stdout)

    def test_config_help_without_the_variable(self):
        env = {'GOCEPT_RUNNER_CONFIG': ''}
        result = self.run_script(self.script('once_locked'), '--help',
                                 env=env)
        self.assertIn('(required unless $GOCEPT_RUNNER_CONFIG names one)',
                      ' '.join(result.stdout.split()))
        result = self.run_script('gocept-runner', '--help', env=env)
        self.assertIn('else the embedded default.conf',
                      ' '.join(result.stdout.split()))

    def test_declared_arguments(self):
        result = self.run_script(self.script('print_batch'), '-C', self.conf,
                                 '--batch', 'x')
        self.assertError(result, 2, "argument --batch: invalid int value")
        self.assertFalse(os.path.exists(self.data_fs))
        result = self.run_script(self.script('print_batch'), '-C', self.conf,
                                 '--batch', '7')
        self.assertEqual('batch 7\n', result.stdout)
        # Called from Python: the defaults.
        result = self.run_script(
            sys.executable, '-c',
            f'from {WORKERS} import print_batch;'
            f' print_batch(None, {self.conf!r})')
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual('batch 100\n', result.stdout)
