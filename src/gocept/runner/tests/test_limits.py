"""Limits after which a run stops: of a loop's ticks, of the process's
runtime and memory."""

import decimal
import fractions
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import unittest

import gocept.runner
from gocept.runner import assembly
from gocept.runner import limits
from gocept.runner import testing
from gocept.runner.config import ConfigurationError
from gocept.runner.limits import Limits
from gocept.runner.limits import resident_memory
from gocept.runner.process import Process
from gocept.runner.tests.fakeloop import FakeLoop
from gocept.runner.tests.test_health import LoopTest


class LimitTests(LoopTest):

    # Limits that are not a positive number (of ticks: a whole one); with
    # max_runtime 0 no tick would ever run.
    # (A Decimal cannot be added to the float of a time.)
    BAD = [('max_ticks', 0), ('max_ticks', -1), ('max_ticks', 1.5),
           ('max_ticks', True), ('max_ticks', '5'),
           ('max_runtime', 0), ('max_runtime', -1), ('max_runtime', math.nan),
           ('max_runtime', '60'), ('max_runtime', decimal.Decimal(5)),
           ('max_memory', 0), ('max_memory', -1), ('max_memory', math.nan)]

    def test_a_limit_that_is_not_a_positive_number_is_refused(self):
        for name, value in self.BAD:
            with self.subTest(name=name, value=value):
                with self.assertRaises(ConfigurationError) as raised:
                    self.loop(**{name: value})
                self.assertRegex(
                    str(raised.exception),
                    f'^{name} must be a .* above 0, not'
                    f' {re.escape(repr(value))}$')
        self.assertEqual([], self.ticks)

    def test_positive_numbers_are_limits(self):
        self.loop(max_ticks=1, max_runtime=0.001, max_memory=1)
        self.loop(max_ticks=3.0, max_runtime=fractions.Fraction(1, 2),
                  max_memory=5e8)
        self.loop(max_runtime=math.inf)

    def test_max_ticks(self):
        loop = self.loop(max_ticks=5)
        with self.assertLogs('gocept.runner', logging.INFO) as logs:
            loop.run()
        self.assertEqual('max_ticks', loop.stopped_because)
        self.assertEqual(5, self.root['count'])
        self.assertEqual(
            ['Worker LoopTest.count reached max_ticks (5), stopping.'],
            [r.getMessage() for r in logs.records])

    def test_max_runtime_ends_a_long_sleep(self):
        loop = self.loop(ticks=3600, max_runtime=0.3)
        started = time.monotonic()
        with self.assertLogs('gocept.runner', logging.INFO):
            loop.run()
        self.assertEqual('max_runtime', loop.stopped_because)
        self.assertEqual(1, self.root['count'])
        self.assertLess(time.monotonic() - started, 2)
        self.assertGreaterEqual(time.monotonic() - started, 0.3)

    def test_max_memory(self):
        loop = self.loop(max_memory=resident_memory() * 4, max_ticks=3)
        with self.assertLogs('gocept.runner', logging.INFO):
            loop.run()
        self.assertEqual('max_ticks', loop.stopped_because)
        loop = self.loop(max_memory=resident_memory() // 2)
        with self.assertLogs('gocept.runner', logging.INFO) as logs:
            loop.run()
        self.assertEqual('max_memory', loop.stopped_because)
        self.assertEqual(4, self.root['count'])
        self.assertIn('reached max_memory', logs.records[0].getMessage())

    def test_the_first_reason_is_kept(self):
        def worker():
            self.count()
            return gocept.runner.Exit
        loop = gocept.runner.MainLoop(self.root, 0, worker, max_ticks=1)
        loop.run()
        self.assertEqual('Exit', loop.stopped_because)

    def test_resident_memory_is_the_rss_in_bytes(self):
        before = resident_memory()
        ballast = bytearray(50 * 1024 * 1024)
        ballast[::4096] = b'x' * len(ballast[::4096])
        self.assertGreater(resident_memory(), before + 40 * 1024 * 1024)


class RefusedLimitTests(unittest.TestCase):
    """A limit that is not a positive number ends a run before anything is
    set up."""

    def test_the_decorators_and_run(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        conf = testing.write_zope_conf(directory)
        ran = []

        def work():
            ran.append(1)

        for decorator in [gocept.runner.appmain(max_runtime=0),
                          gocept.runner.once(max_runtime=0),
                          gocept.runner.appmain(max_ticks=0),
                          gocept.runner.once(max_memory=-1)]:
            with self.subTest(decorator=decorator.options):
                with self.assertRaises(ConfigurationError):
                    decorator(work)(None, conf)
        with self.assertRaises(ConfigurationError):
            assembly.run_worker(work, None, conf, ticks=1, max_runtime=0)
        self.assertEqual([], ran)
        self.assertFalse(os.path.exists(os.path.join(directory, 'Data.fs')))


class CheckTest(unittest.TestCase):

    def test_the_limits_among_the_options(self):
        limits.check(dict(max_ticks=3, max_runtime=0.5, max_memory=10**9,
                          ticks=-1, other='x'))
        limits.check(dict(max_ticks=None, max_runtime=None))
        # Beyond a float, but a number above 0.
        limits.check(dict(max_ticks=10**400, max_runtime=10**400))

    def test_infinite_ticks_are_not_a_whole_number(self):
        with self.assertRaises(ConfigurationError) as raised:
            limits.check(dict(max_ticks=math.inf))
        self.assertEqual('max_ticks must be a whole number above 0, not inf',
                         str(raised.exception))
        limits.check(dict(max_runtime=math.inf))


class LimitsTest(unittest.TestCase):
    """Limits on a fake loop."""

    def messages(self, logs):
        return [(r.name, r.levelname, r.getMessage()) for r in logs.records]

    def process_of(self, *loops):
        process = Process(loops)
        for loop in loops:
            loop.process = process
            loop.running = True
        return process

    def test_max_ticks_stops_the_loop_after_its_tick(self):
        loop = FakeLoop('a', [Limits(max_ticks=2)], outcomes=['error'] * 5)
        with self.assertLogs('gocept.runner', 'INFO') as logs:
            loop()
        self.assertEqual(2, len(loop.ticks))
        self.assertEqual('max_ticks', loop.stopped_because)
        self.assertEqual(
            [('gocept.runner.limits', 'INFO',
              'Worker a reached max_ticks (2), stopping.')],
            self.messages(logs))

    def test_a_loop_that_stopped_in_its_tick_stopped_for_its_reason(self):
        def work(loop, tick):
            if tick.number == 2:
                loop.stop('Exit')
        loop = FakeLoop('a', [Limits(max_ticks=2)], work=work)
        with self.assertNoLogs('gocept.runner', 'INFO'):
            loop()
        self.assertEqual('Exit', loop.stopped_because)

    def test_max_ticks_is_the_loops_the_others_go_on(self):
        a, b = FakeLoop('a'), FakeLoop('b')
        process = self.process_of(a, b)
        with self.assertLogs('gocept.runner', 'INFO'):
            Limits(max_ticks=1).after_tick(a, a.tick())
        self.assertEqual(('max_ticks', None), (a.stopped_because,
                                               b.stopped_because))
        self.assertTrue(b.running)
        self.assertIsNone(process.stopped_because)

    def test_max_runtime_of_a_loop_of_its_own(self):
        limit = Limits(max_runtime=60)
        limit.started = time.monotonic() - 61
        loop = FakeLoop('a', [limit])
        with self.assertLogs('gocept.runner', 'INFO') as logs:
            loop()
        self.assertEqual([], loop.ticks)
        self.assertEqual('max_runtime', loop.stopped_because)
        self.assertEqual(
            [('gocept.runner.limits', 'INFO',
              'Worker a reached max_runtime (60), stopping.')],
            self.messages(logs))

    def test_max_runtime_cuts_the_pause_short(self):
        limit = Limits(max_runtime=10)
        loop = FakeLoop('a', [limit])
        limit.before_loop(loop)
        loop.running = True
        tick = loop.tick(pause=3600)
        limit.after_tick(loop, tick)
        self.assertTrue(loop.running)
        self.assertLessEqual(tick.pause, 10)
        self.assertGreater(tick.pause, 9)
        tick = loop.tick(pause=1)
        limit.after_tick(loop, tick)
        self.assertEqual(1, tick.pause)

    def over_runtime(self):
        """Two loops of a process, and its max_runtime of 1 second, which
        is over."""
        a, b = FakeLoop('a'), FakeLoop('b')
        process = self.process_of(a, b)
        limit = Limits(max_runtime=1)
        limit.before_process(process)
        limit.started -= 2
        return a, b, process, limit

    def test_max_runtime_stops_every_loop_of_the_process_once(self):
        a, b, process, limit = self.over_runtime()
        with self.assertLogs('gocept.runner', 'INFO') as logs:
            limit.after_tick(a, a.tick())
            limit.before_tick(b)
            limit.after_tick(b, b.tick())
        self.assertEqual('max_runtime', process.stopped_because)
        self.assertEqual(['max_runtime'] * 2,
                         [a.stopped_because, b.stopped_because])
        self.assertEqual(
            [('gocept.runner.limits', 'INFO',
              'Host reached max_runtime (1), stopping.')],
            self.messages(logs))

    def test_a_loop_that_runs_on_in_a_stopped_process_stops_at_the_limit(
            self):
        # However it missed the process's stop (a CI run once saw two of
        # three loops tick on to their max_ticks), the limit it reaches
        # stops it, and is said once.
        a, b, _, limit = self.over_runtime()
        with self.assertLogs('gocept.runner', 'INFO') as logs:
            limit.after_tick(a, a.tick())
            b.running, b.stopped_because = True, None
            limit.before_tick(b)
        self.assertEqual((False, 'max_runtime'),
                         (b.running, b.stopped_because))
        self.assertEqual(
            [('gocept.runner.limits', 'INFO',
              'Host reached max_runtime (1), stopping.')],
            self.messages(logs))

    def test_max_runtime_of_a_process_of_one_loop(self):
        loop = FakeLoop('a', work=lambda loop, tick: time.sleep(0.05))
        process = Process([loop], [Limits(max_runtime=0.05)])
        with self.assertLogs('gocept.runner', 'INFO') as logs:
            process.run()
        self.assertEqual(1, len(loop.ticks))
        self.assertEqual(('max_runtime', 'max_runtime'),
                         (process.stopped_because, loop.stopped_because))
        self.assertEqual(
            [('gocept.runner.limits', 'INFO',
              'Worker a reached max_runtime (0.05), stopping.')],
            self.messages(logs))

    def test_max_memory_stops_the_process(self):
        loop = FakeLoop('a')
        process = self.process_of(loop)
        Limits(max_memory=resident_memory() * 4).after_tick(loop, loop.tick())
        self.assertTrue(loop.running)
        with self.assertLogs('gocept.runner', 'INFO') as logs:
            Limits(max_memory=1).after_tick(loop, loop.tick())
        self.assertEqual('max_memory', process.stopped_because)
        self.assertEqual('max_memory', loop.stopped_because)
        self.assertRegex(logs.records[0].getMessage(),
                         r'^Worker a reached max_memory \(\d+\), stopping\.$')


class Meeting(logging.Handler):
    """A log handler at which two threads that log at once meet; one that
    logs alone waits a second for nobody."""

    def __init__(self):
        super().__init__()
        self.meeting = threading.Barrier(2, timeout=1)
        self.records = []

    def emit(self, record):
        self.records.append(record)
        try:
            self.meeting.wait()
        except threading.BrokenBarrierError:
            pass


class HostTest(unittest.TestCase):
    """Limits of a process of several loops, reached by two at once."""

    def test_max_runtime_is_logged_once(self):
        a, b = FakeLoop('a'), FakeLoop('b')
        process = Process([a, b])
        for loop in a, b:
            loop.process, loop.running = process, True
        limit = Limits(max_runtime=1)
        limit.before_process(process)
        limit.started -= 2
        handler = Meeting()
        logger = logging.getLogger('gocept.runner.limits')
        logger.addHandler(handler)
        self.addCleanup(logger.removeHandler, handler)
        self.addCleanup(logger.setLevel, logger.level)
        logger.setLevel(logging.INFO)
        threads = [threading.Thread(target=limit.after_tick,
                                    args=(loop, loop.tick()))
                   for loop in (a, b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(['Host reached max_runtime (1), stopping.'],
                         [r.getMessage() for r in handler.records])
        self.assertEqual('max_runtime', process.stopped_because)
