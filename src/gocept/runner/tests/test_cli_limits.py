"""Limits and health options on the command line."""

import argparse
import os
import unittest

import gocept.runner.arguments
from gocept.runner.tests.test_cli import WORKERS
from gocept.runner.tests.test_cli import CommandLineTest


class LimitOptionsTest(CommandLineTest):

    def test_max_ticks_ends_gocept_runner_with_status_75(self):
        result = self.run_script(
            'gocept-runner', '-C', self.conf, '--ticks', '0', '--max-ticks',
            '3', f'{WORKERS}:count')
        self.assertEqual(75, result.returncode, result.stderr)
        self.assertEqual('count 1\ncount 2\ncount 3\n', result.stdout)

    def test_options_of_a_decorated_worker(self):
        heartbeat = self.path('heartbeat')
        result = self.run_script(
            self.script('count_to_3'), '-C', self.conf, '--max-ticks', '2',
            '--max-runtime', '60', '--max-memory', '4G', '--heartbeat',
            heartbeat)
        self.assertEqual(75, result.returncode, result.stderr)
        self.assertEqual('count 1\ncount 2\n', result.stdout)
        self.assertTrue(os.path.exists(heartbeat))

    def test_a_limit_not_reached(self):
        result = self.run_script(
            self.script('count_to_3'), '-C', self.conf, '--max-ticks', '5')
        self.assertEqual(0, result.returncode, result.stderr)

    def test_bad_values_are_usage_errors(self):
        for option, value in [('--max-ticks', '0'), ('--max-ticks', 'x'),
                              ('--max-runtime', '-1'),
                              ('--max-memory', '10X')]:
            with self.subTest(option=option, value=value):
                result = self.run_script(
                    'gocept-runner', '-C', self.conf, option, value,
                    f'{WORKERS}:count')
                self.assertError(result, 2, option, repr(value))

    def test_a_limit_that_lets_no_tick_run_is_a_usage_error(self):
        # Not 75, which a supervisor answers with a fresh process, which
        # would end at once again, for ever.
        for program, *args in [
                ('gocept-runner', f'{WORKERS}:count'),
                ('gocept-runner', f'{WORKERS}:count', f'{WORKERS}:wait'),
                (self.script('count_to_3'),)]:
            for value in '0', 'nan':
                with self.subTest(program=program, args=args, value=value):
                    result = self.run_script(
                        program, '-C', self.conf, '--max-runtime', value,
                        *args)
                    self.assertError(
                        result, 2, 'argument --max-runtime', repr(value))
                    self.assertEqual('', result.stdout)
        self.assertFalse(os.path.exists(self.data_fs))

    def test_a_decorator_s_limit_that_lets_no_tick_run(self):
        line = 'max_runtime must be a number of seconds above 0, not 0'
        for program, *args in [
                (self.script('no_time'),),
                ('gocept-runner', f'{WORKERS}:no_time'),
                ('gocept-runner', f'{WORKERS}:count', f'{WORKERS}:no_time')]:
            with self.subTest(program=program, args=args):
                result = self.run_script(program, '-C', self.conf, *args)
                self.assertError(result, 2, line)
                self.assertEqual('', result.stdout)
        self.assertFalse(os.path.exists(self.data_fs))
        # The command line's limit replaces the decorator's.
        result = self.run_script(
            self.script('no_time'), '-C', self.conf, '--max-runtime', '60',
            '--max-ticks', '1')
        self.assertEqual(75, result.returncode, result.stderr)
        self.assertEqual('count 1\n', result.stdout)


class SizeTest(unittest.TestCase):

    def test_sizes(self):
        size = gocept.runner.arguments.size_in_bytes
        self.assertEqual(1000, size('1000'))
        self.assertEqual(2048, size('2k'))
        self.assertEqual(512 * 1024 ** 2, size('512M'))
        self.assertEqual(1536 * 1024 ** 2, size('1.5G'))
        for bad in '', 'G', '0', '-1M', '1T':
            with self.subTest(bad=bad):
                with self.assertRaises(argparse.ArgumentTypeError):
                    size(bad)
