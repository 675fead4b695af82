"""A sleep that ends at once when it is told to, even from a signal
handler."""

import os
import select
import signal
import threading
import time
import unittest
import unittest.mock

from gocept.runner.wakeup import Sleep
from gocept.runner.wakeup import Wakeup


class WakeupTest(unittest.TestCase):

    def setUp(self):
        self.wakeup = Wakeup()
        self.wakeup.open()
        self.addCleanup(self.wakeup.close)

    def test_a_sleep_that_nothing_ends(self):
        started = time.monotonic()
        self.assertFalse(self.wakeup.sleep(0.05))
        self.assertGreaterEqual(time.monotonic() - started, 0.04)

    def test_a_wake_before_the_sleep_ends_the_next_one_at_once(self):
        self.wakeup.wake()
        self.wakeup.wake()
        self.assertTrue(self.wakeup.sleep(3600))
        # Both wakes were for that one sleep.
        self.assertFalse(self.wakeup.sleep(0))

    def test_a_wake_from_another_thread(self):
        timer = threading.Timer(0.05, self.wakeup.wake)
        timer.start()
        self.addCleanup(timer.join)
        started = time.monotonic()
        self.assertTrue(self.wakeup.sleep(60))
        self.assertLess(time.monotonic() - started, 30)

    def test_a_wake_from_a_signal_handler(self):
        def handler(signum, frame):
            self.wakeup.wake()
        self.addCleanup(signal.signal, signal.SIGALRM,
                        signal.signal(signal.SIGALRM, handler))
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        self.addCleanup(signal.setitimer, signal.ITIMER_REAL, 0)
        self.assertTrue(self.wakeup.sleep(60))

    def test_many_wakes_never_block(self):
        for _ in range(100000):
            self.wakeup.wake()
        self.assertTrue(self.wakeup.sleep(0))
        self.assertFalse(self.wakeup.sleep(0))

    def test_a_wake_between_the_end_of_the_wait_and_the_read(self):
        # A signal handler that runs just after select() timed out: its
        # wake ends this sleep (whose read takes its byte), not no sleep.
        wait = select.select

        def then_woken(*args):
            result = wait(*args)
            self.wakeup.wake()
            return result
        with unittest.mock.patch.object(select, 'select', then_woken):
            self.assertTrue(self.wakeup.sleep(0.01))
        self.assertFalse(self.wakeup.sleep(0))

    def test_its_end_to_wait_on(self):
        self.assertTrue(self.wakeup.is_open)
        self.wakeup.wake()
        ready, _, _ = select.select([self.wakeup], [], [], 1)
        self.assertEqual([self.wakeup], ready)


class ClosedTest(unittest.TestCase):

    def test_a_wake_before_open_or_after_close_does_nothing(self):
        wakeup = Wakeup()
        self.assertFalse(wakeup.is_open)
        wakeup.wake()
        wakeup.open()
        fd = wakeup.fileno()
        wakeup.close()
        self.assertFalse(wakeup.is_open)
        self.assertIsNone(wakeup.fileno())
        wakeup.wake()
        with self.assertRaises(OSError):
            os.fstat(fd)


class SleepTest(unittest.TestCase):
    """The sleep of a loop between two ticks."""

    def setUp(self):
        self.sleep = Sleep()
        self.sleep.open()
        self.addCleanup(self.sleep.close)
        self.wakeups = []
        self.running = True

    def run_sleep(self, seconds):
        started = time.monotonic()
        self.sleep.sleep(seconds, lambda: self.running,
                         lambda: self.wakeups.append(time.monotonic()))
        return time.monotonic() - started

    def test_it_sleeps_its_time(self):
        self.assertGreaterEqual(self.run_sleep(0.05), 0.04)
        self.assertEqual([], self.wakeups)

    def test_tick_now_ends_it_at_once_from_another_thread(self):
        timer = threading.Timer(0.05, self.sleep.tick_now)
        timer.start()
        self.addCleanup(timer.join)
        self.assertLess(self.run_sleep(60), 30)
        # Only that sleep.
        self.assertGreaterEqual(self.run_sleep(0.05), 0.04)

    def test_tick_now_before_it_ends_the_next_as_it_begins(self):
        self.sleep.tick_now()
        self.assertLess(self.run_sleep(60), 30)

    def test_a_wake_has_after_wakeup_called_and_it_sleeps_on(self):
        timer = threading.Timer(0.05, self.sleep.wake)
        timer.start()
        self.addCleanup(timer.join)
        self.assertGreaterEqual(self.run_sleep(0.3), 0.29)
        self.assertEqual(1, len(self.wakeups))

    def test_it_ends_when_the_loop_no_longer_runs(self):
        def stop():
            self.running = False
            self.sleep.pipe.wake()
        timer = threading.Timer(0.05, stop)
        timer.start()
        self.addCleanup(timer.join)
        self.assertLess(self.run_sleep(60), 30)

    def test_where_no_sleep_follows_a_wake_is_seen_to(self):
        called = []
        self.sleep.no_sleep(lambda: called.append(1))
        self.assertEqual([], called)
        self.sleep.wake()
        self.sleep.no_sleep(lambda: called.append(1))
        self.assertEqual([1], called)
        # The wake is used up, its byte too.
        self.assertFalse(self.sleep.pipe.sleep(0))
        self.sleep.no_sleep(lambda: called.append(1))
        self.assertEqual([1], called)
