"""Trying again: Backoff's pauses, retry.run for a transaction, retry.call
for anything else."""

import logging
import unittest

import transaction
import ZEO.Exceptions
from ZODB.POSException import ConflictError

from gocept.runner import retry
from gocept.runner.retry import Backoff


class BackoffTest(unittest.TestCase):

    def test_the_pause_doubles_up_to_the_longest(self):
        pauses = Backoff(0.5, 5)
        self.assertEqual([0.5, 1, 2, 4, 5, 5],
                         [next(pauses) for _ in range(6)])

    def test_reset_starts_over(self):
        pauses = Backoff(1, 60)
        next(pauses), next(pauses), next(pauses)
        pauses.reset()
        self.assertEqual([1, 2], [next(pauses) for _ in range(2)])

    def test_it_is_an_iterator_without_end(self):
        pauses = Backoff(1, 2)
        self.assertIs(pauses, iter(pauses))
        self.assertEqual([1, 2, 2], [p for p, _ in zip(pauses, range(3))])

    def test_with_jitter_each_pause_is_a_random_part_of_it(self):
        bounds = [1, 2, 4, 8, 8]
        runs = [[next(pauses) for _ in bounds] for pauses in (
            Backoff(1, 8, jitter=True) for _ in range(200))]
        for run in runs:
            for pause, bound in zip(run, bounds):
                self.assertGreaterEqual(pause, 0)
                self.assertLessEqual(pause, bound)
        # Random: not the bounds, and not the same each time.
        self.assertGreater(len({run[4] for run in runs}), 100)
        self.assertLess(max(run[0] for run in runs), 1)
        self.assertGreater(max(run[4] for run in runs), 4)


class Vote:
    """A data manager whose vote raises the errors in `errors`, one per
    commit, until they run out."""

    transaction_manager = transaction.manager

    def __init__(self, errors):
        self.errors = errors

    def tpc_vote(self, txn):
        if self.errors:
            raise self.errors.pop(0)

    def abort(self, txn):
        pass

    tpc_begin = commit = tpc_finish = tpc_abort = abort

    def sortKey(self):
        return 'vote'


class RunTest(unittest.TestCase):

    def setUp(self):
        self.addCleanup(transaction.abort)
        self.steps = []

    def func(self, errors, result='done'):
        """A function that joins the data manager of `errors` to the
        transaction and returns `result`."""
        vote = Vote(errors)

        def func():
            self.steps.append('func')
            transaction.get().join(vote)
            return result
        return func

    def run_steps(self, func, **kw):
        return retry.run(
            func, begin=lambda: self.steps.append('begin'),
            abort=lambda: (self.steps.append('abort'), transaction.abort()),
            **kw)

    def test_a_commit_returns_the_result_and_no_retries(self):
        self.assertEqual(('done', 0), self.run_steps(self.func([])))
        self.assertEqual(['begin', 'func'], self.steps)

    def test_a_conflict_is_tried_again_after_an_abort(self):
        failed = []
        result = self.run_steps(self.func([ConflictError(), ConflictError()]),
                                failed=failed.append)
        self.assertEqual(('done', 2), result)
        self.assertEqual(['begin', 'func', 'abort'] * 2 + ['begin', 'func'],
                         self.steps)
        self.assertEqual([ConflictError] * 2, [type(e) for e in failed])

    def test_the_last_attempts_error_is_raised(self):
        errors = [ConflictError(str(n)) for n in range(5)]
        with self.assertRaises(ConflictError) as raised:
            self.run_steps(self.func(list(errors)), attempts=4)
        self.assertIs(errors[3], raised.exception)
        self.assertEqual(4, self.steps.count('abort'))

    def test_a_disconnected_zeo_client_is_retryable_too(self):
        result = self.run_steps(
            self.func([ZEO.Exceptions.ClientDisconnected()]))
        self.assertEqual(('done', 1), result)

    def test_another_error_is_raised_at_once(self):
        with self.assertRaises(ValueError):
            self.run_steps(self.func([ValueError(), ValueError()]))
        self.assertEqual(['begin', 'func', 'abort'], self.steps)

    def test_may_retry_says_whether(self):
        with self.assertRaises(ConflictError):
            self.run_steps(self.func([ConflictError()]),
                           may_retry=lambda: False)
        self.assertEqual(['begin', 'func', 'abort'], self.steps)

    def test_an_error_of_func_aborts_too(self):
        def func():
            self.steps.append('func')
            raise KeyboardInterrupt
        with self.assertRaises(KeyboardInterrupt):
            self.run_steps(func)
        self.assertEqual(['begin', 'func', 'abort'], self.steps)


class CallTest(unittest.TestCase):

    def test_it_returns_what_the_function_returns(self):
        self.assertEqual(4, retry.call(lambda: 4, 3, None, Backoff(1, 1)))

    def test_a_retryable_error_is_tried_again_after_the_next_pause(self):
        errors = [OSError('one'), OSError('two')]
        pauses = Backoff(0.001, 0.002)

        def func():
            if errors:
                raise errors.pop(0)
            return 'done'
        with self.assertLogs('gocept.runner.retry', logging.DEBUG) as logs:
            self.assertEqual('done', retry.call(
                func, 3, lambda e: isinstance(e, OSError), pauses))
        self.assertEqual(
            ["Attempt 1 of 3 failed, trying again: OSError('one')",
             "Attempt 2 of 3 failed, trying again: OSError('two')"],
            [r.getMessage() for r in logs.records])
        self.assertEqual(0.002, next(pauses))

    def test_the_last_attempts_error_is_raised(self):
        calls = []

        def func():
            calls.append(1)
            raise OSError(len(calls))
        with self.assertRaises(OSError) as raised:
            retry.call(func, 3, lambda e: True, Backoff(0.001, 0.001))
        self.assertEqual((3,), raised.exception.args)

    def test_another_error_is_raised_at_once(self):
        calls = []

        def func():
            calls.append(1)
            raise ValueError
        with self.assertRaises(ValueError):
            retry.call(func, 3, lambda e: isinstance(e, OSError),
                       Backoff(1, 1))
        self.assertEqual([1], calls)
