"""Limits and health options on the command line."""

import argparse
import os
import unittest

import gocept.runner.cli
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


class SizeTest(unittest.TestCase):

    def test_sizes(self):
        size = gocept.runner.cli._bytes
        self.assertEqual(1000, size('1000'))
        self.assertEqual(2048, size('2k'))
        self.assertEqual(512 * 1024 ** 2, size('512M'))
        self.assertEqual(1536 * 1024 ** 2, size('1.5G'))
        for bad in '', 'G', '0', '-1M', '1T':
            with self.subTest(bad=bad):
                with self.assertRaises(argparse.ArgumentTypeError):
                    size(bad)
