"""What happens on a signal: real signals sent to this process while a
Process runs a fake loop in the main thread."""

import logging
import os
import shutil
import signal
import tempfile
import threading
import unittest

import ZConfig.components.logger.loghandler

from gocept.runner import signals
from gocept.runner.middleware import Middleware
from gocept.runner.process import Process
from gocept.runner.tests.fakeloop import FakeLoop
from gocept.runner.tests.fakeloop import Recorder


SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGUSR2)


class SignalsTest(unittest.TestCase):

    def setUp(self):
        # Whatever a test does, the handlers are Python's again after it.
        for signum in SIGNALS:
            self.addCleanup(signal.signal, signum, signal.getsignal(signum))
            signal.signal(signum, signal.default_int_handler
                          if signum == signal.SIGINT else signal.SIG_DFL)

    def kill(self, signum):
        """Send `signum` to this process, if a Signals handles it (not to
        end the test run if none does)."""
        handler = signal.getsignal(signum)
        self.assertIsInstance(getattr(handler, '__self__', None),
                              signals.Signals)
        os.kill(os.getpid(), signum)

    def run_loop(self, work, outcomes=('committed',) * 5, middleware=()):
        """Run a fake loop in a process; return the loop."""
        loop = FakeLoop('a', outcomes=outcomes, work=work)
        Process([loop], middleware).run()
        return loop

    def messages(self, logs):
        return [(r.name, r.levelname, r.getMessage()) for r in logs.records]


class HandledTest(SignalsTest):

    def test_the_handlers_are_installed_for_the_block(self):
        with signals.handled() as handling:
            self.assertEqual(
                [handling.handle] * 4,
                [signal.getsignal(signum) for signum in SIGNALS])
        self.assertEqual(
            [signal.SIG_DFL, signal.SIG_DFL, signal.default_int_handler,
             signal.SIG_DFL],
            [signal.getsignal(signum) for signum in SIGNALS])

    def test_a_programs_own_handler_stays(self):
        def own(signum, frame):
            pass  # pragma: no cover
        signal.signal(signal.SIGTERM, own)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with signals.handled() as handling:
            self.assertIs(own, signal.getsignal(signal.SIGTERM))
            self.assertEqual(handling.handle,
                             signal.getsignal(signal.SIGINT))
        self.assertIs(own, signal.getsignal(signal.SIGTERM))
        self.assertIs(signal.SIG_IGN, signal.getsignal(signal.SIGINT))

    def test_an_exiting_program_ignores_them_afterwards(self):
        with signals.handled(exiting=True):
            pass
        self.assertEqual(
            [signal.SIG_IGN] * 4,
            [signal.getsignal(signum) for signum in SIGNALS])

    def test_nested_blocks_share_the_outer_ones_handlers(self):
        with signals.handled() as outer:
            with signals.handled() as inner:
                self.assertIs(outer, inner)
            self.assertEqual(outer.handle, signal.getsignal(signal.SIGTERM))
        self.assertIs(signal.SIG_DFL, signal.getsignal(signal.SIGTERM))

    def test_outside_the_main_thread_nothing_is_handled(self):
        seen = []

        def block():
            with signals.handled() as handling:
                seen.append((handling, signal.getsignal(signal.SIGTERM)))
        thread = threading.Thread(target=block)
        thread.start()
        thread.join()
        [(handling, handler)] = seen
        self.assertIsInstance(handling, signals.Signals)
        self.assertIs(signal.SIG_DFL, handler)


class StopTest(SignalsTest):

    def test_a_stop_signal_stops_the_process_after_the_tick(self):
        for signum in signal.SIGTERM, signal.SIGHUP:
            seen = []
            with self.assertLogs('gocept.runner', 'INFO') as logs:
                def work(loop, tick):
                    if tick.number == 2:
                        self.kill(signum)
                        # Handled, but not logged in the handler: the
                        # loop logs it after the tick.
                        seen.append((loop.process.stopped_because,
                                     len(logs.records)))
                loop = self.run_loop(work)
            self.assertEqual([('signal', 0)], seen)
            self.assertEqual(['committed'] * 2,
                             [tick.outcome for tick in loop.ticks])
            self.assertEqual(('signal', signum),
                             (loop.stopped_because, loop.signal))
            self.assertEqual(
                [('gocept.runner.runner', 'INFO',
                  f'Received signal {signum}, terminating.')],
                self.messages(logs))

    def test_the_process_says_which_signal_stopped_it(self):
        def work(loop, tick):
            self.kill(signal.SIGHUP)
        with self.assertLogs('gocept.runner', 'INFO'):
            runner = Process([FakeLoop(work=work)])
            runner.run()
        self.assertEqual(('signal', signal.SIGHUP),
                         (runner.stopped_because, runner.signal))

    def test_a_burst_is_one_stop_and_one_line(self):
        def work(loop, tick):
            for _ in range(3):
                self.kill(signal.SIGTERM)
        with self.assertLogs('gocept.runner', 'INFO') as logs:
            loop = self.run_loop(work)
        self.assertEqual(1, len(loop.ticks))
        self.assertEqual(1, len(logs.records))

    def test_SIGINT_aborts_the_worker_in_the_main_thread(self):
        def work(loop, tick):
            self.kill(signal.SIGINT)
            raise AssertionError('not interrupted')  # pragma: no cover
        with self.assertLogs('gocept.runner', 'INFO'):
            loop = self.run_loop(work)
        [tick] = loop.ticks
        self.assertEqual('aborted', tick.outcome)
        self.assertIsInstance(tick.error, KeyboardInterrupt)
        self.assertEqual(('signal', signal.SIGINT),
                         (loop.stopped_because, loop.signal))

    def test_SIGINT_outside_the_worker_lets_the_tick_end(self):
        class Interrupts(Middleware):
            def after_tick(self, loop, tick):
                test.kill(signal.SIGINT)
        test = self
        recorder = Recorder()
        with self.assertLogs('gocept.runner', 'INFO') as logs:
            loop = self.run_loop(None, middleware=[Interrupts(), recorder])
        self.assertEqual(['committed'], [t.outcome for t in loop.ticks])
        self.assertEqual(['before_loop', 'before_tick', 'after_tick',
                          'after_loop'], recorder.of('a'))
        self.assertEqual('signal', loop.stopped_because)
        self.assertEqual(1, len(logs.records))

    def test_a_signal_before_the_loops_run_means_no_tick(self):
        with signals.handled():
            with self.assertLogs('gocept.runner', 'INFO') as logs:
                self.kill(signal.SIGTERM)
                loop = self.run_loop(None)
                runner = Process([FakeLoop()])
                runner.run()
        self.assertEqual([], loop.ticks)
        self.assertEqual(('signal', signal.SIGTERM),
                         (loop.stopped_because, loop.signal))
        # The signal was the first run's; the second runs.
        self.assertIsNone(runner.stopped_because)
        self.assertEqual(1, len(logs.records))

    def test_a_loop_without_a_process(self):
        loop = FakeLoop()
        loop.running = True
        with self.assertLogs('gocept.runner', 'INFO') as logs:
            signals.received(loop, signal.SIGTERM, None)
        self.assertEqual(('signal', signal.SIGTERM, False),
                         (loop.stopped_because, loop.signal, loop.running))
        self.assertEqual(['Received signal 15, terminating.'],
                         [r.getMessage() for r in logs.records])

    def test_a_programs_own_handler_for_a_loop_in_a_process(self):
        # A 3.x program's ``signal.signal(SIGTERM, loop.stopMainLoop)``.
        seen = []

        def work(loop, tick):
            signals.received(loop, signal.SIGTERM, None)
            seen.append(loop.process.stopped_because)
        with self.assertLogs('gocept.runner', 'INFO') as logs:
            loop = self.run_loop(work)
        self.assertEqual(['signal'], seen)
        self.assertEqual(1, len(loop.ticks))
        self.assertEqual(('signal', signal.SIGTERM),
                         (loop.stopped_because, loop.signal))
        self.assertEqual(1, len(logs.records))


class ReopenTest(SignalsTest):

    def setUp(self):
        super().setUp()
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        self.path = os.path.join(directory, 'log')
        handler = ZConfig.components.logger.loghandler.FileHandler(self.path)
        self.addCleanup(handler.close)
        self.logger = logging.getLogger('gocept.runner.tests.reopen')
        self.logger.addHandler(handler)
        self.addCleanup(self.logger.removeHandler, handler)
        self.logger.propagate = False
        self.addCleanup(setattr, self.logger, 'propagate', True)

    def read(self, path):
        with open(path) as f:
            return f.read()

    def test_SIGUSR2_reopens_the_log_files_and_the_loop_goes_on(self):
        seen = []

        def work(loop, tick):
            self.logger.warning('tick %s', tick.number)
            if tick.number == 1:
                os.rename(self.path, f'{self.path}.1')
                self.kill(signal.SIGUSR2)
                seen.append(os.path.exists(self.path))
        with self.assertLogs('gocept.runner.signals', 'DEBUG') as logs:
            loop = self.run_loop(work, outcomes=['committed'] * 3)
        self.assertEqual([False], seen)
        self.assertEqual('Exit', loop.stopped_because)
        self.assertEqual('tick 1\n', self.read(f'{self.path}.1'))
        self.assertEqual('tick 2\ntick 3\n', self.read(self.path))
        self.assertEqual(['Log files reopened'],
                         [r.getMessage() for r in logs.records])
