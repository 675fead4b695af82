"""Time limits interrupt a job in the main thread and in other threads."""

import threading
import time
import unittest

from gocept.runner.jobs.timelimit import TimeLimitExceeded
from gocept.runner.jobs.timelimit import time_limit
from gocept.runner.tests.jobprograms import spin


def in_thread(function):
    """Call `function` in a thread of its own; return what it returned or
    raised."""
    outcome = []

    def run():
        try:
            outcome.append(function())
        except BaseException as e:
            outcome.append(e)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    return outcome[0]


def limited(seconds, work):
    """Run `work` within `seconds`; return how long it ran and whether the
    limit ended it."""
    started = time.monotonic()
    try:
        with time_limit(seconds):
            work()
    except TimeLimitExceeded:
        return time.monotonic() - started, True
    return time.monotonic() - started, False


class TimeLimitTest(unittest.TestCase):

    def test_interrupts_python_code_in_the_main_thread(self):
        self.assertIs(threading.current_thread(), threading.main_thread())
        elapsed, interrupted = limited(0.2, lambda: spin(10))
        self.assertTrue(interrupted)
        self.assertLess(elapsed, 2)

    def test_interrupts_python_code_in_a_thread(self):
        elapsed, interrupted = in_thread(
            lambda: limited(0.2, lambda: spin(10)))
        self.assertTrue(interrupted)
        self.assertLess(elapsed, 2)

    def test_interrupts_each_thread_at_its_own_deadline(self):
        results = {}

        def run(seconds):
            results[seconds] = limited(seconds, lambda: spin(10))
        threads = [threading.Thread(target=run, args=(seconds,))
                   for seconds in (0.2, 0.6, 1.0)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        for seconds, (elapsed, interrupted) in results.items():
            self.assertTrue(interrupted)
            self.assertGreaterEqual(elapsed, seconds)
            self.assertLess(elapsed, seconds + 1)

    def test_code_that_ends_in_time_is_not_interrupted_later(self):
        elapsed, interrupted = limited(0.3, lambda: spin(0.1))
        self.assertFalse(interrupted)
        # Past the deadline, outside the block: nothing arrives.
        spin(0.5)

    def test_code_that_catches_the_interruption_is_interrupted_anyway(self):
        def swallow():
            try:
                spin(10)
            except BaseException:
                pass
        elapsed, interrupted = limited(0.2, swallow)
        self.assertTrue(interrupted)
        self.assertLess(elapsed, 2)

    def test_code_blocked_in_c_is_interrupted_when_it_returns(self):
        elapsed, interrupted = limited(0.1, lambda: time.sleep(0.5))
        self.assertTrue(interrupted)
        self.assertGreaterEqual(elapsed, 0.5)

    def test_none_is_no_limit(self):
        elapsed, interrupted = limited(None, lambda: spin(0.1))
        self.assertFalse(interrupted)

    def test_the_message_names_the_limit(self):
        with self.assertRaises(TimeLimitExceeded) as raised:
            with time_limit(0.1):
                spin(10)
        self.assertEqual('Ran past its time limit of 0.1 seconds',
                         str(raised.exception))
        self.assertNotIsInstance(raised.exception, Exception)
