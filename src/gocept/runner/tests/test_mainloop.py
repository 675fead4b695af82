"""The main loop run through the decorators, on a FileStorage on disk."""

import logging
import os
import shutil
import signal
import tempfile
import unittest

import transaction
import ZODB
import ZODB.interfaces
import zope.component
import zope.component.hooks
import zope.exceptions.log
import zope.security.management
import zope.site.folder
import zope.site.site

import gocept.runner
from gocept.runner.middleware import Middleware
from gocept.runner.runner import init
from gocept.runner.testing import Synchronizer
from gocept.runner.testing import write_zope_conf


NO_LOG_OUTPUT = '<eventlog>\n</eventlog>\n'


class MainLoopTest(unittest.TestCase):

    def setUp(self):
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)
        self.conf = write_zope_conf(self.directory, log=NO_LOG_OUTPUT)

    def open_db(self):
        """Open the test's FileStorage: fails while a runner holds it."""
        db = ZODB.DB(f'{self.directory}/Data.fs')
        self.addCleanup(db.close)
        return db

    def read(self, attribute):
        tm = transaction.TransactionManager()
        conn = self.open_db().open(tm)
        try:
            return getattr(conn.root()['Application'], attribute, None)
        finally:
            conn.close()

    def test_error_log_includes_non_ascii_message_and_traceback(self):
        @gocept.runner.once()
        def worker():
            raise RuntimeError('Fehler in der Verarbeitung: äöü ß €')
        with self.assertLogs('gocept.runner', logging.ERROR) as logs:
            worker(None, self.conf)
        [record] = logs.records
        self.assertEqual('Error in worker %s, transaction aborted', record.msg)
        text = zope.exceptions.log.Formatter().format(record)
        self.assertIn('Traceback (most recent call last):', text)
        self.assertIn('RuntimeError: Fehler in der Verarbeitung: äöü ß €',
                      text)

    def test_error_in_worker_aborts_and_loop_goes_on(self):
        calls = []

        @gocept.runner.appmain(ticks=0)
        def worker():
            site = zope.component.hooks.getSite()
            calls.append(getattr(site, 'value', None))
            site.value = len(calls)
            if len(calls) == 1:
                raise ValueError('first tick fails')
            return gocept.runner.Exit
        with self.assertLogs('gocept.runner', logging.ERROR):
            worker(None, self.conf)
        self.assertEqual([None, None], calls)
        self.assertEqual(2, self.read('value'))

    def test_error_in_commit_is_logged_and_aborted(self):
        @gocept.runner.once()
        def worker():
            zope.component.hooks.getSite().value = 'not committed'
            transaction.get().join(FailingDataManager())
        with self.assertLogs('gocept.runner', logging.ERROR) as logs:
            worker(None, self.conf)
        self.assertIn('Error committing', logs.output[0])
        self.assertIn('RuntimeError: vote fails', logs.output[0])
        self.assertIsNone(self.read('value'))

    def test_conflict_on_commit_is_a_warning_and_loop_goes_on(self):
        # A second connection with its own transaction manager commits a
        # change of the same object while the worker's tick is open, for the
        # first five calls of the worker.
        calls = []

        @gocept.runner.appmain(ticks=0)
        def worker():
            site = zope.component.hooks.getSite()
            calls.append(getattr(site, 'counter', 0))
            site.counter = calls[-1] + 1
            if len(calls) <= 5:
                db = zope.component.getUtility(ZODB.interfaces.IDatabase)
                tm = transaction.TransactionManager()
                other = db.open(tm)
                other.root()['Application'].counter = 100 * len(calls)
                tm.commit()
                other.close()
                return None
            return gocept.runner.Exit
        with self.assertLogs('gocept.runner', logging.DEBUG) as logs:
            worker(None, self.conf)
        warnings = [r for r in logs.records if r.levelno == logging.WARNING]
        self.assertTrue(warnings)
        for record in warnings:
            self.assertIn('onflict', record.getMessage())
            self.assertIsNone(record.exc_info)
        self.assertFalse(
            [r for r in logs.records if r.levelno >= logging.ERROR])
        # The last tick saw what the conflicting transaction committed and
        # committed on top of it.
        self.assertEqual(501, self.read('counter'))

    signums = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGUSR2)

    def handlers_during_run(self):
        seen = {}

        @gocept.runner.once()
        def worker():
            seen.update({signum: signal.getsignal(signum)
                         for signum in self.signums})
        worker(None, self.conf)
        return seen

    def test_default_signal_handlers_are_replaced_and_restored(self):
        for signum in self.signums:
            self.addCleanup(signal.signal, signum,
                            signal.signal(signum, signal.SIG_DFL))
        seen = self.handlers_during_run()
        self.assertNotIn(signal.SIG_DFL, seen.values())
        for signum in self.signums:
            self.assertIs(signal.SIG_DFL, signal.getsignal(signum))

    def test_SIGINT_after_the_tick_began_aborts_the_worker_before_it_runs(
            self):
        # A real SIGINT that comes while the tick begins its transaction,
        # before the worker is called: the worker does not run, as one it
        # had come to would have been interrupted.
        class Interrupt(Middleware, Synchronizer):
            armed = False

            def before_tick(self, loop):
                self.armed = True

            # As a transaction synchronizer of the loop's thread.
            def newTransaction(self, txn):
                if self.armed:
                    self.armed = False
                    os.kill(os.getpid(), signal.SIGINT)

        interrupt = Interrupt()
        transaction.manager.registerSynch(interrupt)
        self.addCleanup(transaction.manager.unregisterSynch, interrupt)
        ran = []

        @gocept.runner.appmain(ticks=0, middleware=[interrupt])
        def worker():
            ran.append(True)
            return gocept.runner.Exit
        with self.assertLogs('gocept.runner', logging.INFO) as logs:
            worker(None, self.conf)
        self.assertEqual([], ran)
        self.assertEqual(['Received signal 2, terminating.'],
                         [r.getMessage() for r in logs.records])

    def test_a_programs_own_signal_handlers_stay(self):
        def handler(signum, frame):
            pass  # pragma: no cover
        for signum in self.signums:
            self.addCleanup(signal.signal, signum,
                            signal.signal(signum, handler))
        seen = self.handlers_during_run()
        self.assertEqual({signum: handler for signum in self.signums}, seen)

    def test_signal_during_tick_lets_tick_commit_then_stops(self):
        for signum in signal.SIGTERM, signal.SIGHUP:
            calls = []

            @gocept.runner.appmain(ticks=0)
            def worker():
                calls.append(True)
                os.kill(os.getpid(), signum)
                site = zope.component.hooks.getSite()
                site.value = getattr(site, 'value', 0) + 1
            with self.assertLogs('gocept.runner', logging.INFO) as logs:
                worker(None, self.conf)
            self.assertEqual([True], calls)
            self.assertEqual(
                [f'Received signal {signum}, terminating.'],
                [r.getMessage() for r in logs.records])
        self.assertEqual(2, self.read('value'))

    def assertDatabaseClosed(self):
        self.assertIsNone(zope.component.queryUtility(
            ZODB.interfaces.IDatabase))
        # The FileStorage lock is released: another DB can open the file.
        ZODB.DB(f'{self.directory}/Data.fs').close()

    def test_database_closed_after_exit(self):
        @gocept.runner.once()
        def worker():
            pass
        worker(None, self.conf)
        self.assertDatabaseClosed()

    def test_database_closed_after_unknown_site(self):
        @gocept.runner.once()
        def worker():
            pass  # pragma: no cover
        with self.assertRaises(KeyError) as err:
            worker('nosuchsite', self.conf)
        self.assertEqual("Unknown site 'nosuchsite': the root folder has no"
                         " item of that name", str(err.exception))
        self.assertDatabaseClosed()

    def test_database_closed_after_unknown_principal(self):
        @gocept.runner.once(principal='nobody')
        def worker():
            pass  # pragma: no cover
        with self.assertRaises(gocept.runner.ConfigurationError) as err:
            worker(None, self.conf)
        self.assertEqual("Unknown principal 'nobody'", str(err.exception))
        self.assertDatabaseClosed()

    def test_database_closed_when_a_local_site_of_it_is_left_current(self):
        # A 3.x loop of a program's own that raises leaves its site current.
        with init(None, self.conf) as root:
            root['sub'] = zope.site.folder.Folder()
            root['sub'].setSiteManager(
                zope.site.site.LocalSiteManager(root['sub']))
            transaction.commit()
        with self.assertRaises(ValueError):
            with init('sub', self.conf) as sub:
                zope.component.hooks.setSite(sub)
                raise ValueError
        self.assertIsNone(zope.component.hooks.getSite())
        self.assertDatabaseClosed()

    def test_database_closed_after_system_exit_and_keyboard_interrupt(self):
        for exception in SystemExit(2), KeyboardInterrupt():
            @gocept.runner.appmain(ticks=0)
            def worker():
                raise exception
            worker(None, self.conf)
            self.assertDatabaseClosed()

    def test_principal_callable_is_resolved_once_at_start(self):
        resolved = []

        def principal():
            resolved.append(True)
            return 'zope.mgr'
        ids = []

        @gocept.runner.appmain(ticks=0, principal=principal)
        def worker():
            interaction = zope.security.management.getInteraction()
            ids.append(interaction.participations[0].principal.id)
            if len(ids) == 3:
                return gocept.runner.Exit
        worker(None, self.conf)
        self.assertEqual(['zope.mgr'] * 3, ids)
        self.assertEqual([True], resolved)

    def test_principal_id_set_as_3x_subclasses_may(self):
        loop = gocept.runner.MainLoop(object(), 0, lambda: None,
                                      principal='zope.mgr')
        self.assertEqual(('zope.mgr', True),
                         (loop.principal_id, loop.interaction))
        loop.interactions.principal = 'the one found'
        loop.principal_id = None
        self.assertEqual((None, None, False),
                         (loop.interactions.principal_id,
                          loop.interactions.principal, loop.interaction))

    def test_interaction_ended_after_failing_tick(self):
        @gocept.runner.once(principal='zope.mgr')
        def worker():
            raise ValueError('fails')
        with self.assertLogs('gocept.runner', logging.ERROR):
            worker(None, self.conf)
        self.assertIsNone(zope.security.management.queryInteraction())

    def test_exit_code_and_failure_are_recorded_on_the_loop(self):
        from gocept.runner.assembly import run_worker as run

        def fails():
            raise ValueError('fails')
        with self.assertLogs('gocept.runner', logging.ERROR):
            loop = run(fails, None, self.conf, ticks=0, once=True)
        self.assertTrue(loop.failed)
        self.assertIsNone(loop.exit_code)

        def leaves():
            raise SystemExit(4)
        loop = run(leaves, None, self.conf, ticks=0)
        self.assertFalse(loop.failed)
        self.assertEqual(4, loop.exit_code)


class FailingDataManager:
    """A data manager whose vote fails, so that commit fails."""

    transaction_manager = transaction.manager

    def abort(self, txn):
        pass

    def tpc_begin(self, txn):
        pass

    def commit(self, txn):
        pass

    def tpc_vote(self, txn):
        raise RuntimeError('vote fails')

    def tpc_finish(self, txn):
        pass  # pragma: no cover

    def tpc_abort(self, txn):
        pass

    def sortKey(self):
        return 'zzz-failing'
