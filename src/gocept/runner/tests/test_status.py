"""Exit statuses: of a loop, of a process, of an error before or outside
the loops; the loops run on a FileStorage on disk."""

import errno
import os
import shutil
import signal
import tempfile
import unittest

import ZEO.Exceptions
import zope.component.hooks
from ZODB.POSException import ConflictError

import gocept.runner
from gocept.runner import host
from gocept.runner import status
from gocept.runner import testing
from gocept.runner.config import ConfigurationError
from gocept.runner.lock import AlreadyRunning
from gocept.runner.lock import NotALockFile
from gocept.runner.process import Process
from gocept.runner.tests.fakeloop import root


NO_LOG_OUTPUT = '<eventlog>\n</eventlog>\n'


class ExitStatusTest(unittest.TestCase):
    """The exit status of a program whose MainLoop has ended."""

    def setUp(self):
        self.app = root(self)
        # Python's handlers again after the test, whatever it did.
        for signum in signal.SIGINT, signal.SIGTERM:
            self.addCleanup(signal.signal, signum, signal.getsignal(signum))

    def status(self, work, once=False, **options):
        """Run a loop of `work` (called with the loop); return the exit
        status."""
        def worker():
            return work(loop)
        loop = gocept.runner.MainLoop(self.app, 0, worker, once=once,
                                      **options)
        loop()
        return status.exit_status(loop)

    def kill(self, signum):
        # Only if the run handles it: not to end the test run.
        self.assertIsNot(signal.getsignal(signum), signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def fails(self, loop):
        raise ValueError('fails')

    def test_done_is_0(self):
        self.assertEqual(0, self.status(lambda loop: gocept.runner.Exit))
        self.assertEqual(0, self.status(lambda loop: None, once=True))

    def test_the_workers_own_SystemExit_code(self):
        def leave(loop):
            raise SystemExit(4)
        self.assertEqual(4, self.status(leave))
        self.assertEqual(4, self.status(leave, once=True))

    def test_a_limit_is_75(self):
        self.assertEqual(75, self.status(lambda loop: None, max_ticks=2))
        self.assertEqual(75, self.status(lambda loop: None, max_memory=1))

    def test_a_single_run_that_failed_is_1(self):
        with self.assertLogs('gocept.runner', 'ERROR'):
            self.assertEqual(1, self.status(self.fails, once=True))

    def test_a_failed_tick_of_a_loop_is_not(self):
        def work(loop):
            if loop.tick_count == 1:
                self.fails(loop)
            return gocept.runner.Exit
        with self.assertLogs('gocept.runner', 'ERROR'):
            self.assertEqual(0, self.status(work))

    def test_ctrl_c_before_a_single_run_committed_is_130(self):
        def interrupt(loop):
            self.kill(signal.SIGINT)
        with self.assertLogs('gocept.runner', 'INFO'):
            self.assertEqual(130, self.status(interrupt, once=True))

        def raise_(loop):
            raise KeyboardInterrupt
        self.assertEqual(130, self.status(raise_, once=True))

    def test_but_not_a_stop_signal_nor_a_loop(self):
        def terminate(loop):
            self.kill(signal.SIGTERM)
        with self.assertLogs('gocept.runner', 'INFO'):
            self.assertEqual(0, self.status(terminate, once=True))

        def interrupt(loop):
            self.kill(signal.SIGINT)
        with self.assertLogs('gocept.runner', 'INFO'):
            self.assertEqual(0, self.status(interrupt))


class ProcessStatusTest(unittest.TestCase):

    def setUp(self):
        self.app = root(self)

    def loop(self, work, **options):
        return gocept.runner.MainLoop(self.app, 0, work, **options)

    def test_the_first_of_its_loops_that_is_not_0(self):
        def leave():
            raise SystemExit(3)
        process = Process([self.loop(lambda: gocept.runner.Exit),
                           self.loop(leave)])
        process.run()
        self.assertEqual(3, status.process_status(process))
        process = Process([self.loop(lambda: None, once=True)])
        process.run()
        self.assertEqual(0, status.process_status(process))

    def test_a_limit_of_the_process_is_75(self):
        process = Process([self.loop(lambda: None, once=True)])
        process.stop('max_runtime')
        self.assertEqual(75, status.process_status(process))

    def test_a_host(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        conf = testing.write_zope_conf(directory, log=NO_LOG_OUTPUT)

        def ok():
            zope.component.hooks.getSite()

        def leave():
            raise SystemExit(5)
        runner = host.Host([host.Worker(ok, once=True),
                            host.Worker(leave)]).run(conf)
        self.assertEqual(5, status.process_status(runner))


class FailureTest(unittest.TestCase):
    """The exit status and message of an error before the loops."""

    def caused(self, cause):
        """A ConfigurationError that `cause` raised."""
        try:
            try:
                raise cause
            except Exception as e:
                raise ConfigurationError('Cannot open the database') from e
        except ConfigurationError as e:
            return e

    def test_another_process_holds_the_lock(self):
        self.assertEqual((75, 'held'), status.failure(AlreadyRunning('held')))

    def test_a_configuration_error(self):
        self.assertEqual((2, 'bad'), status.failure(ConfigurationError('bad')))
        self.assertEqual((2, 'no lock file'),
                         status.failure(NotALockFile('no lock file')))
        self.assertEqual((2, 'Cannot open the database'),
                         status.failure(self.caused(ValueError())))

    def test_one_that_may_pass_by_itself(self):
        for cause in (ZEO.Exceptions.ClientDisconnected(),
                      OSError(errno.ENOSPC, 'No space left on device')):
            self.assertEqual((1, 'Cannot open the database'),
                             status.failure(self.caused(cause)))

    def test_any_other_error(self):
        self.assertEqual((1, 'ValueError: no'),
                         status.failure(ValueError('no')))

    def test_what_is_transient(self):
        self.assertTrue(status.transient(ConflictError()))
        self.assertTrue(status.transient(ZEO.Exceptions.ClientDisconnected()))
        self.assertTrue(status.transient(OSError(errno.EDQUOT, 'quota')))
        self.assertFalse(status.transient(OSError(errno.EIO, 'I/O error')))
        self.assertFalse(status.transient(None))


class DescribeTest(unittest.TestCase):

    def test_the_table_as_a_sentence(self):
        text = status.describe()
        self.assertTrue(text.startswith(
            'Exit status: 0 when done (or stopped by SIGTERM or SIGHUP),'
            " the worker's own SystemExit code, 1 when a single run"), text)
        self.assertTrue(text.endswith(
            ', 130 when SIGINT (Ctrl-C) stopped a single run before it'
            ' committed.'), text)
        for number in 0, 1, 2, 75, 130:
            self.assertEqual(1, text.count(f' {number} '), number)
