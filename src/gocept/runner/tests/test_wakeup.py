"""A sleep that ends at once when it is told to, even from a signal
handler."""

import os
import select
import signal
import threading
import time
import unittest

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
