"""What transaction_per_item tells about a run."""

import contextlib
import functools
import io
import logging
import os
import pty
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import transaction

import gocept.runner
from gocept.runner import peritem
from gocept.runner import testing


def restore(test, *names):
    for name in names:
        test.addCleanup(setattr, peritem, name, getattr(peritem, name))


def process_item_7():
    raise ValueError


def process_item(number, force=False):
    raise ValueError


class Job:

    def __call__(self):
        raise ValueError

    def run(self, *args):
        raise ValueError

    @staticmethod
    def make():
        return lambda: 1 / 0


class Mail:

    def __call__(self):
        raise ValueError

    def __repr__(self):
        return '<Mail to bob>'


class ProgressTests(unittest.TestCase):

    def setUp(self):
        restore(self, 'PROGRESS_INTERVAL', 'SUMMARY_SECONDS')
        self.addCleanup(transaction.abort)
        # Not a terminal, wherever the tests run.
        self.stderr = io.StringIO()
        stack = contextlib.ExitStack()
        stack.enter_context(contextlib.redirect_stderr(self.stderr))
        self.addCleanup(stack.close)

    def run_items(self, count, seconds_each=0, fail=()):
        def item(number):
            time.sleep(seconds_each)
            if number in fail:
                raise ValueError(f'cannot do {number}')

        @gocept.runner.transaction_per_item
        def items():
            for number in range(count):
                yield f'number {number}', lambda number=number: item(number)
        with self.assertLogs('gocept.runner.peritem', logging.DEBUG) as logs:
            items()
        return logs.records

    def test_a_short_run_has_its_summary_at_debug(self):
        [summary] = self.run_items(10)
        self.assertEqual(logging.DEBUG, summary.levelno)
        self.assertRegex(summary.getMessage(),
                         r'items: 10 items committed, 0 failed, 0 conflicts'
                         r' in \d+\.\d s \(\d+\.\d items/s\)$')

    def test_a_short_run_with_a_failure_has_its_error_line_only(self):
        error, summary = self.run_items(3, fail={1})
        self.assertEqual(logging.ERROR, error.levelno)
        self.assertEqual(logging.DEBUG, summary.levelno)
        self.assertIn('items: 2 items committed, 1 failed',
                      summary.getMessage())

    def test_a_run_of_SUMMARY_SECONDS_has_its_summary_at_info(self):
        peritem.SUMMARY_SECONDS = 0.1
        error, summary = self.run_items(3, 0.05, fail={0})
        self.assertEqual(logging.INFO, summary.levelno)
        self.assertIn('items: 2 items committed, 1 failed, 0 conflicts',
                      summary.getMessage())

    def test_a_failed_item_is_named_by_its_description(self):
        [error, summary] = self.run_items(3, fail={2})
        self.assertEqual('Error in number 2, transaction aborted',
                         error.getMessage())
        self.assertEqual('cannot do 2', str(error.exc_info[1]))

    def failed_items(self, *items):
        @gocept.runner.transaction_per_item
        def run():
            yield from items
        with self.assertLogs('gocept.runner.peritem', logging.ERROR) as logs:
            run()
        return [record.getMessage() for record in logs.records]

    def test_a_bare_callable_is_named_by_its_qualified_name(self):
        self.assertEqual(
            ['Error in process_item_7, transaction aborted',
             'Error in Job.run, transaction aborted',
             'Error in Job, transaction aborted',
             'Error in Job.make.<locals>.<lambda>, transaction aborted'],
            self.failed_items(process_item_7, Job().run, Job(), Job.make()))

    def test_a_partial_is_named_with_its_arguments(self):
        self.assertEqual(
            ["Error in process_item(7, force=True), transaction aborted",
             "Error in Job.run('x'), transaction aborted"],
            self.failed_items(functools.partial(process_item, 7, force=True),
                              functools.partial(Job().run, 'x')))

    def test_an_object_with_a_repr_of_its_own_is_named_by_it(self):
        self.assertEqual(['Error in <Mail to bob>, transaction aborted'],
                         self.failed_items(Mail()))

    def test_a_long_run_logs_progress_and_summary_at_info(self):
        peritem.PROGRESS_INTERVAL = 0.1
        peritem.SUMMARY_SECONDS = 0.1
        records = self.run_items(10, 0.03)
        self.assertEqual({logging.INFO}, {r.levelno for r in records})
        *progress, summary = [r.getMessage() for r in records]
        # 0.3 s in steps of 0.1 s, give or take a busy machine.
        self.assertGreaterEqual(len(progress), 1)
        self.assertLessEqual(len(progress), 3)
        for line in progress:
            self.assertRegex(line, r'items: \d+ items committed, 0 failed,'
                             r' 0 conflicts in \d+\.\d s \(\d+\.\d items/s\)'
                             r' so far$')
        self.assertIn('items: 10 items committed, 0 failed', summary)
        self.assertEqual('', self.stderr.getvalue())


class CollectTests(unittest.TestCase):

    def setUp(self):
        self.addCleanup(transaction.abort)

    def test_collect_counts_the_runs_within_its_block(self):
        @gocept.runner.transaction_per_item
        def items(fail):
            yield 'good', lambda: None
            yield 'bad', lambda: 1 / 0 if fail else None
        items(True)  # before the block: not counted
        with self.assertLogs('gocept.runner.peritem'):
            with peritem.collect() as outer:
                items(True)
                with peritem.collect() as inner:
                    items(False)
        items(True)  # after the block: not counted
        self.assertEqual((3, 1, 0), (outer.committed, outer.failed,
                                     outer.conflicts))
        self.assertEqual((2, 0), (inner.committed, inner.failed))


# Run in a child whose stderr is a terminal.
TERMINAL_CHILD = """\
import logging, sys, time
import gocept.runner
from gocept.runner import peritem
peritem.TERMINAL_DELAY = 0.1
peritem.TERMINAL_UPDATE = 0.05
logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                    format='%(levelname)s %(message)s')

@gocept.runner.transaction_per_item
def batch():
    for number in range(30):
        yield f'number {number}', lambda: time.sleep(0.01)
    yield 'broken', lambda: 1 / 0

batch()
print('done', flush=True)
"""


class TerminalTests(unittest.TestCase):
    layer = testing.SubprocessLayer

    def test_a_terminal_shows_a_progress_line_and_no_info_lines(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        stdout = os.path.join(directory, 'stdout')
        controller, terminal = pty.openpty()
        self.addCleanup(os.close, controller)
        with open(stdout, 'w') as out:
            child = subprocess.Popen(
                [sys.executable, '-c', TERMINAL_CHILD], stdout=out,
                stderr=terminal, env=dict(os.environ, COLUMNS='60'))
        os.close(terminal)
        shown = b''
        while True:
            try:
                data = os.read(controller, 4096)
            except OSError:  # the child closed the terminal (Linux)
                break
            if not data:
                break
            shown += data
        self.assertEqual(0, child.wait())
        first, *lines = shown.decode().split('\r\x1b[K')
        self.assertEqual('', first)
        progress = lines[:-1]
        self.assertGreaterEqual(len(progress), 2, shown)
        for line in progress:
            self.assertRegex(line, r'^batch: \d+ committed, 0 failed,'
                             r' 0 conflicts, \d+\.\d items/s$')
            self.assertLessEqual(len(line), 59)
        # Erased at the end, before the error line went to stdout.
        self.assertEqual('', lines[-1])
        with open(stdout) as f:
            output = f.read().splitlines()
        self.assertEqual('ERROR Error in broken, transaction aborted',
                         output[0])
        self.assertEqual(['done'], output[-1:])
        self.assertNotIn('so far', '\n'.join(output))
