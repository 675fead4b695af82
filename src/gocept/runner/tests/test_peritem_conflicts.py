"""transaction_per_item meets real conflicts, and never runs an item twice.

A second connection to the same FileStorage, with a transaction manager of
its own as if it were another process, commits in the middle of a batch.
"""

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import BTrees.OOBTree
import persistent.mapping
import transaction
import ZEO.ClientStorage
import ZEO.Exceptions
import ZODB
from ZODB.POSException import ConflictError

import gocept.runner
from gocept.runner import cli
from gocept.runner import retry
from gocept.runner import testing
from gocept.runner.tests import peritemworkers
from gocept.runner.tests import programs


class BatchTests(unittest.TestCase):

    def setUp(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        self.db = ZODB.DB(os.path.join(directory, 'Data.fs'))
        self.addCleanup(self.db.close)
        self.conn = self.db.open()
        self.addCleanup(self.conn.close)
        self.addCleanup(transaction.abort)
        self.root = self.conn.root()
        # Items write into `done`, the generator into `state`: only the
        # generator's own changes conflict with the other connection.
        self.root['done'] = persistent.mapping.PersistentMapping()
        self.root['state'] = persistent.mapping.PersistentMapping()
        transaction.commit()
        self.other_tm = transaction.TransactionManager()
        self.other = self.db.open(self.other_tm).root()
        self.addCleanup(self.other._p_jar.close)
        # The numbers of the items in the order they ran.
        self.ran = []

    def commit_elsewhere(self):
        """Change `state` in the other connection."""
        self.other_tm.begin()
        self.other['state']['other'] = self.other['state'].get('other', 0) + 1
        self.other_tm.commit()

    def item(self, number):
        self.ran.append(number)
        self.root['done'][number] = self.root['done'].get(number, 0) + 1

    def batch(self, conflict_before=None, conflict_after=False,
              raise_at=None):
        """A batch of six items; the generator counts them in `state`."""
        @gocept.runner.transaction_per_item
        def batch():
            for number in range(6):
                if number == raise_at:
                    # As a read conflict in the generator's own code would.
                    raise ConflictError(f'reading for item {number}')
                self.root['state']['next'] = number
                if number == conflict_before:
                    self.commit_elsewhere()
                yield f'item {number}', lambda number=number: self.item(
                    number)
            self.root['state']['next'] = None
            if conflict_after:
                self.commit_elsewhere()
        return batch

    def stored(self):
        self.other_tm.begin()
        return dict(self.other['done']), dict(self.other['state'])

    def run_once(self, worker):
        """Run `worker` in a `once` loop; return the loop and the log."""
        loop = gocept.runner.MainLoop(self.root, 0, worker, once=True)
        with self.assertLogs('gocept.runner', logging.DEBUG) as logs:
            loop.run()
        return loop, [(r.levelname, r.getMessage()) for r in logs.records]

    def test_a_conflict_of_the_generators_changes_skips_the_item(self):
        loop, logs = self.run_once(self.batch(conflict_before=3))
        # Items 0-2 ran once, in the loop's first and only attempt.
        self.assertEqual([0, 1, 2, 4, 5], self.ran)
        done, state = self.stored()
        self.assertEqual({0: 1, 1: 1, 2: 1, 4: 1, 5: 1}, done)
        self.assertEqual({'next': None, 'other': 1}, state)
        level, warning = logs[0]
        self.assertEqual('WARNING', level)
        self.assertTrue(warning.startswith(
            'Conflict in the changes made before item 3, transaction'
            ' aborted, item skipped: database conflict error'), warning)
        self.assertRegex(logs[1][1], r'batch: 5 items committed, 1 failed,'
                         r' 1 conflicts in ')
        self.assertEqual(
            ('DEBUG', 'Tick 1 of worker BatchTests.batch.<locals>.batch:'
             ' committed'), (logs[2][0], logs[2][1].rsplit(' in ', 1)[0]))
        self.assertEqual(3, len(logs))
        self.assertFalse(loop.failed)
        self.assertEqual(1, loop.items_failed)
        self.assertEqual(cli.EX_FAILURE, cli.exit_status(loop))

    def test_a_conflict_of_the_changes_after_the_last_item_is_logged(self):
        loop, logs = self.run_once(self.batch(conflict_after=True))
        self.assertEqual(list(range(6)), self.ran)
        done, state = self.stored()
        self.assertEqual(dict.fromkeys(range(6), 1), done)
        # The generator's last change was lost, the other's kept.
        self.assertEqual({'next': 5, 'other': 1}, state)
        level, warning = logs[0]
        self.assertEqual('WARNING', level)
        self.assertTrue(warning.startswith(
            'Conflict in the changes made after the last item of'
            ' BatchTests.batch.<locals>.batch, transaction aborted:'
            ' database conflict error'), warning)
        self.assertEqual(1, loop.items_failed)
        self.assertEqual(cli.EX_FAILURE, cli.exit_status(loop))

    def test_a_conflict_in_the_generator_after_a_commit_ends_the_run(self):
        loop, logs = self.run_once(self.batch(raise_at=2))
        self.assertEqual([0, 1], self.ran)
        self.assertEqual({0: 1, 1: 1}, self.stored()[0])
        self.assertEqual(
            ('WARNING', 'Conflict in BatchTests.batch.<locals>.batch after'
             ' 2 items, transaction aborted; the run ends here: reading for'
             ' item 2'), logs[0])
        self.assertEqual(1, loop.items_failed)
        self.assertEqual(cli.EX_FAILURE, cli.exit_status(loop))

    def test_a_conflict_in_the_generator_before_any_commit_is_retried(self):
        # Nothing was committed: the loop may run the worker again.
        attempts = []

        def worker():
            attempts.append(1)
            self.batch(raise_at=0 if len(attempts) == 1 else None)()
        loop, logs = self.run_once(worker)
        self.assertEqual(2, len(attempts))
        self.assertEqual(list(range(6)), self.ran)
        self.assertEqual(0, loop.items_failed)
        self.assertEqual(cli.EX_OK, cli.exit_status(loop))

    def test_an_item_that_keeps_conflicting_fails_and_the_rest_goes_on(self):
        def conflicting():
            self.root['state']['item'] = 1
            self.commit_elsewhere()

        @gocept.runner.transaction_per_item
        def batch():
            yield 'first', lambda: self.item(0)
            yield 'the conflicting one', conflicting
            yield 'last', lambda: self.item(2)
        loop, logs = self.run_once(batch)
        self.assertEqual([0, 2], self.ran)
        self.assertEqual(('WARNING', 'Conflict in the conflicting one,'
                          f' transaction aborted after {retry.ATTEMPTS}'
                          ' attempts: database conflict error'),
                         (logs[0][0], logs[0][1].split(' (')[0]))
        self.assertEqual({'other': retry.ATTEMPTS}, self.stored()[1])
        self.assertEqual(cli.EX_FAILURE, cli.exit_status(loop))

    def test_a_tick_whose_items_committed_is_not_tried_again(self):
        # The worker changes more after the batch, and the tick's own
        # commit conflicts: the loop does not retry the tick, which would
        # run the batch again.
        batch = self.batch()

        def worker():
            batch()
            self.root['state']['after'] = True
            self.commit_elsewhere()
        loop, logs = self.run_once(worker)
        self.assertEqual([0, 1, 2, 3, 4, 5], self.ran)
        done, state = self.stored()
        self.assertEqual({number: 1 for number in range(6)}, done)
        self.assertEqual({'next': None, 'other': 1}, state)
        warnings = [message for level, message in logs if level == 'WARNING']
        self.assertEqual(1, len(warnings), logs)
        self.assertIn('not tried again: items of transaction_per_item'
                      ' committed in it', warnings[0])
        self.assertTrue(loop.committed)
        self.assertEqual(cli.EX_FAILURE, cli.exit_status(loop))

    def test_an_appmain_loop_logs_failed_items_and_goes_on(self):
        @gocept.runner.transaction_per_item
        def batch():
            yield 'broken', lambda: 1 / 0
            yield 'fine', lambda: self.item(len(self.ran))
        loop = gocept.runner.MainLoop(self.root, 0, batch, max_ticks=3)
        with self.assertLogs('gocept.runner', logging.INFO) as logs:
            loop.run()
        self.assertEqual(
            ['Error in broken, transaction aborted'] * 3 +
            ['Worker BatchTests.test_an_appmain_loop_logs_failed_items_and'
             '_goes_on.<locals>.batch reached max_ticks (3), stopping.'],
            [r.getMessage() for r in logs.records])
        self.assertEqual([0, 1, 2], self.ran)
        self.assertEqual('max_ticks', loop.stopped_because)
        self.assertFalse(loop.failed)
        self.assertEqual(1, loop.items_failed)


class ProgramTests(unittest.TestCase):
    """A ``once`` program whose items failed exits 1, as cron must see."""

    layer = testing.SubprocessLayer

    def run_program(self, name):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        zope_conf = programs.write_zope_conf(directory)
        code = ('import sys; from gocept.runner.tests import peritemworkers;'
                f' sys.exit(peritemworkers.{name}())')
        return subprocess.run(
            [sys.executable, '-c', code, '-C', zope_conf], cwd=directory,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def test_a_once_program_with_a_failed_item_exits_1(self):
        result = self.run_program('failing_batch')
        self.assertEqual(1, result.returncode, result.stdout)
        lines = result.stdout.splitlines()
        self.assertEqual(
            'ERROR gocept.runner.peritem Error in document 2, transaction'
            ' aborted', lines[0])
        self.assertEqual('ValueError: document 2 is broken', lines[-1])

    def test_a_once_program_whose_items_all_committed_exits_0(self):
        result = self.run_program('good_batch')
        self.assertEqual(0, result.returncode, result.stdout)
        self.assertEqual('', result.stdout)


class TwoProcessesTests(unittest.TestCase):
    """Two runner processes on one ZEO server run conflicting batches."""

    layer = testing.ZEO_LAYER

    def test_no_item_is_lost_or_run_twice(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        server = self.layer.server
        db = ZODB.DB(ZEO.ClientStorage.ClientStorage(
            ('127.0.0.1', server.port), wait_timeout=30))
        self.addCleanup(db.close)
        tm = transaction.TransactionManager()
        root = db.open(tm).root()
        self.addCleanup(tm.abort)
        tm.begin()
        root['shared'] = peritemworkers.Counter()
        root['position'] = peritemworkers.Counter()
        root['done'] = BTrees.OOBTree.OOBTree()
        tm.commit()
        runners = {}
        for name in 'a', 'b':
            os.mkdir(os.path.join(directory, name))
            zope_conf = programs.write_zope_conf(
                os.path.join(directory, name),
                storage=f'<zeoclient>\n server {server.address}\n'
                        '  </zeoclient>',
                level='DEBUG', log=os.path.join(directory, f'{name}.log'))
            runners[name] = subprocess.Popen(
                [sys.executable, '-m', peritemworkers.__name__, name,
                 zope_conf], stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True)
        committed = failed = 0
        for name, process in runners.items():
            output = process.communicate(timeout=120)[0]
            with open(os.path.join(directory, f'{name}.log')) as f:
                log = f.read()
            summary = re.search(r'peritem shared: (\d+) items committed,'
                                r' (\d+) failed, (\d+) conflicts', log)
            self.assertIsNotNone(summary, output + log)
            counts = [int(n) for n in summary.groups()]
            self.assertEqual(peritemworkers.ITEMS, counts[0] + counts[1])
            self.assertEqual(1 if counts[1] else 0, process.returncode,
                             output + log)
            committed += counts[0]
            failed += counts[1]
        tm.begin()
        done = dict(root['done'])
        # Every committed item counted once, none twice, none lost.
        self.assertEqual(committed, root['shared'].value)
        self.assertEqual(committed, len(done))
        self.assertEqual({1}, set(done.values()))


class OutageTests(unittest.TestCase):
    """The ZEO server goes away in the middle of a batch."""

    layer = testing.SubprocessLayer

    def setUp(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        self.server = testing.ZEOServer(directory)
        self.server.start()
        self.addCleanup(self.server.stop)
        self.db = ZODB.DB(ZEO.ClientStorage.ClientStorage(
            ('127.0.0.1', self.server.port), wait_timeout=0.2))
        self.addCleanup(self.db.close)
        conn = self.db.open()
        self.addCleanup(conn.close)
        self.addCleanup(transaction.abort)
        self.root = conn.root()
        self.ran = []

    def batch(self, stop_at):
        @gocept.runner.transaction_per_item
        def batch():
            for number in range(5):
                if number == stop_at:
                    self.server.stop()
                yield f'item {number}', lambda number=number: self.item(
                    number)
        return batch

    def item(self, number):
        self.ran.append(number)
        self.root[number] = number

    def test_after_a_commit_the_run_ends_with_a_warning(self):
        with self.assertLogs('gocept.runner.peritem', logging.DEBUG) as logs:
            self.batch(stop_at=2)()
        # Item 2 was tried as often as a conflict is; 3 and 4 never ran.
        self.assertEqual([0, 1] + [2] * retry.ATTEMPTS, self.ran)
        self.assertEqual(
            ['Storage unavailable (ClientDisconnected) in item 2,'
             ' transaction aborted; the run ends here'],
            [r.getMessage() for r in logs.records
             if r.levelno == logging.WARNING])
        self.assertRegex(logs.records[-1].getMessage(),
                         r'batch: 2 items committed, 1 failed, 0 conflicts')

    def test_before_any_commit_the_error_is_raised(self):
        # The caller (the main loop) may retry: no item was committed.
        with self.assertRaises(ZEO.Exceptions.ClientDisconnected):
            self.batch(stop_at=0)()
        self.assertEqual([0] * retry.ATTEMPTS, self.ran)
