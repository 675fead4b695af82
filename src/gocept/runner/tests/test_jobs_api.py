"""Putting jobs and asking about them: gocept.runner.jobs' contract, in
the process of the test (no worker runs here)."""

import datetime
import math
import random
import re
import time
import unittest

import transaction
import ZODB.MappingStorage
import zope.component.hooks
import zope.security.management

from gocept.runner import jobs
from gocept.runner.jobs import attempts
from gocept.runner.jobs import registry
from gocept.runner.jobs import store
from gocept.runner.jobs.record import Job
from gocept.runner.security import RunnerRequest
from gocept.runner.tests import jobprograms


class Principal:
    id = 'zope.editor'


class PutTest(unittest.TestCase):

    def setUp(self):
        self.client = jobprograms.Client.open(
            ZODB.MappingStorage.MappingStorage())
        self.addCleanup(self.client.close)

    def test_a_decorated_function_still_works_when_called(self):
        self.assertEqual(5, jobprograms.add(2, b=3))
        self.assertEqual('add', jobprograms.add.__name__)
        self.assertEqual('gocept.runner.tests.jobprograms:add',
                         jobprograms.add.name)

    def test_delay_puts_a_pending_job_and_returns_its_id(self):
        before = time.time()
        job_id = jobprograms.add.delay(2, b=3)
        self.assertIsInstance(job_id, str)
        self.assertRegex(job_id, r'^[0-9a-f]{32}$')
        self.assertEqual('pending', jobs.status(job_id))
        record = self.client.jobs().get(job_id)
        self.assertEqual('gocept.runner.tests.jobprograms:add', record.name)
        self.assertEqual((2,), record.args)
        self.assertEqual({'b': 3}, record.kwargs)
        self.assertEqual(3, record.retries)
        self.assertIsNone(record.time_limit)
        self.assertIsNone(record.principal)
        self.assertEqual([], record.attempts)
        self.assertTrue(before <= record.eta <= time.time())

    def test_ids_differ(self):
        ids = {jobprograms.add.delay(number) for number in range(100)}
        self.assertEqual(100, len(ids))

    def test_a_job_put_in_a_transaction_that_aborts_does_not_exist(self):
        job_id = jobprograms.add.delay(1)
        transaction.abort()
        self.assertIsNone(jobs.status(job_id))
        self.assertIsNone(self.client.jobs().get(job_id))

    def test_a_committed_job_is_there_for_another_connection(self):
        job_id = jobprograms.add.delay(1)
        transaction.commit()
        other = self.client.db.open(transaction.TransactionManager())
        self.assertEqual(job_id, store.jobs_of(other).get(job_id).id)
        other.close()

    def test_arguments_may_be_persistent_objects(self):
        counter, = self.client.counters(1)
        job_id = jobprograms.mark.delay(counter)
        transaction.commit()
        other = self.client.db.open(transaction.TransactionManager())
        record = store.jobs_of(other).get(job_id)
        self.assertEqual(counter._p_oid, record.args[0]._p_oid)
        other.close()

    def test_countdown_and_eta_delay_a_job(self):
        now = time.time()
        by_countdown = jobprograms.add.apply_async((1,), countdown=60)
        by_datetime = jobprograms.add.apply_async(
            (1,), eta=datetime.datetime.now() + datetime.timedelta(hours=1))
        by_seconds = jobprograms.add.apply_async((1,), eta=now + 60)
        due = jobprograms.add.apply_async(kwargs={'a': 1}, countdown=0)
        for job_id in by_countdown, by_datetime, by_seconds:
            self.assertEqual('delayed', jobs.status(job_id))
        self.assertEqual('pending', jobs.status(due))
        eta = self.client.jobs().get(by_datetime).eta
        self.assertAlmostEqual(now + 3600, eta, delta=5)

    def test_bad_arguments_are_one_clear_error(self):
        add = jobprograms.add
        for call, error, message in [
            (lambda: add.apply_async(1), TypeError,
             'args must be a tuple or a list, not 1'),
            (lambda: add.apply_async((), []), TypeError,
             'kwargs must be a dict, not []'),
            (lambda: add.apply_async(countdown=-1), ValueError,
             'countdown must be a number of seconds from 0 up, not -1'),
            (lambda: add.apply_async(countdown=math.nan), ValueError,
             'countdown must be a number of seconds from 0 up, not nan'),
            (lambda: add.apply_async(countdown='5'), ValueError,
             "countdown must be a number of seconds from 0 up, not '5'"),
            (lambda: add.apply_async(countdown=1, eta=time.time()),
             ValueError, 'Give countdown or eta, not both'),
            (lambda: add.apply_async(eta='tomorrow'), ValueError,
             "eta must be a datetime or seconds since the epoch, not"
             " 'tomorrow'"),
        ]:
            with self.assertRaises(error) as raised:
                call()
            self.assertEqual(message, str(raised.exception))
        self.assertEqual(0, len(self.client.jobs()))

    def test_the_principal_of_the_interaction_is_recorded(self):
        request = RunnerRequest()
        request.setPrincipal(Principal())
        zope.security.management.newInteraction(request)
        self.addCleanup(zope.security.management.endInteraction)
        job_id = jobprograms.add.delay(1)
        self.assertEqual('zope.editor',
                         self.client.jobs().get(job_id).principal)

    def test_no_site_is_one_clear_error(self):
        zope.component.hooks.setSite(None)
        for call in (lambda: jobprograms.add.delay(1),
                     lambda: jobs.status('x')):
            with self.assertRaises(jobs.NoSite) as raised:
                call()
            self.assertIn('No site stored in a database',
                          str(raised.exception))


class StatusTest(unittest.TestCase):

    def setUp(self):
        self.client = jobprograms.Client.open(
            ZODB.MappingStorage.MappingStorage())
        self.addCleanup(self.client.close)
        self.job_id = jobprograms.add.delay(2, b=3)
        self.record = self.client.jobs().get(self.job_id)

    def test_an_unknown_job_has_no_status_and_no_result(self):
        self.assertIsNone(jobs.status('0' * 32))
        with self.assertRaises(jobs.NoResult) as raised:
            jobs.result('0' * 32)
        self.assertEqual(f'No job {"0" * 32} (unknown, or no longer kept)',
                         str(raised.exception))

    def test_a_pending_job_has_no_result(self):
        with self.assertRaises(jobs.NoResult) as raised:
            jobs.result(self.job_id)
        self.assertEqual(
            f'Job gocept.runner.tests.jobprograms:add {self.job_id} is'
            ' pending, not done', str(raised.exception))

    def test_states(self):
        self.record.begin_attempt('worker', time.time())
        self.assertEqual('running', jobs.status(self.job_id))
        self.record.end_attempt('done', time.time())
        self.client.jobs().done(self.record, time.time())
        self.record.result = 5
        self.assertEqual('done', jobs.status(self.job_id))
        self.assertEqual(5, jobs.result(self.job_id))
        self.record.state = 'failed'
        self.assertEqual('failed', jobs.status(self.job_id))

    def test_a_done_job_is_kept_for_keep_done_seconds(self):
        container = self.client.jobs()
        self.record.begin_attempt('worker', time.time())
        container.done(self.record, time.time() - 3600)
        container.keep_done = 3601
        self.assertEqual(0, container.expire(time.time()))
        self.assertEqual('done', jobs.status(self.job_id))
        container.keep_done = 3599
        self.assertEqual(1, container.expire(time.time()))
        self.assertIsNone(jobs.status(self.job_id))


class DecoratorTest(unittest.TestCase):

    def test_options(self):
        decorated = registry.job(retries=0, time_limit=1.5,
                                 retry_pause=2)(jobprograms.not_a_job)
        self.addCleanup(registry._registry.pop, decorated.name)
        self.assertEqual((0, 1.5, 2), (decorated.retries,
                                       decorated.time_limit,
                                       decorated.retry_pause))
        self.assertIs(decorated, registry.lookup_function(
            'gocept.runner.tests.jobprograms:not_a_job'))

    def test_only_functions_found_by_name_are_jobs(self):
        def nested():
            pass
        for function in nested, lambda: None:
            with self.assertRaises(ValueError) as raised:
                registry.job(function)
            self.assertIn('job decorates functions that workers find by'
                          ' name', str(raised.exception))
        with self.assertRaises(TypeError):
            registry.job(jobprograms.add)
        self.assertIsNone(registry.lookup_function(
            'gocept.runner.tests.jobprograms:not_a_job'))

    def test_bad_options_are_one_clear_error(self):
        for options, message in [
            (dict(retries=-1), 'retries must be a whole number from 0 up,'
                               ' not -1'),
            (dict(retries=1.5), 'retries must be a whole number from 0 up,'
                                ' not 1.5'),
            (dict(time_limit=0), 'time_limit must be a number of seconds'
                                 ' above 0, not 0'),
            (dict(retry_pause=math.inf), 'retry_pause must be a number of'
                                         ' seconds, not inf'),
        ]:
            with self.assertRaises(ValueError) as raised:
                registry.job(**options)
            self.assertEqual(message, str(raised.exception))


class RetryPauseTest(unittest.TestCase):

    def test_pauses_grow_from_the_first_to_the_longest(self):
        random.seed(0)
        for _ in range(100):
            pauses = [attempts.pause(10, tries) for tries in range(1, 12)]
            ceilings = [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600,
                        3600]
            for pause, ceiling in zip(pauses, ceilings):
                self.assertTrue(ceiling / 2 <= pause <= ceiling,
                                (pause, ceiling))
            self.assertEqual(pauses[:9], sorted(pauses[:9]))

    def test_pauses_spread(self):
        self.assertGreater(len({attempts.pause(10, 1) for _ in range(10)}),
                           5)


class RecordTest(unittest.TestCase):

    def test_a_job_runs_in_its_worker_s_last_attempt_only(self):
        job = Job('id', 'module:function')
        job.begin_attempt('worker a', time.time())
        self.assertTrue(job.runs_in('worker a', 1))
        self.assertFalse(job.runs_in('worker b', 1))
        self.assertFalse(job.runs_in('worker a', 2))
        job.end_attempt('died', time.time(), 'its process died')
        job.state = 'pending'
        self.assertFalse(job.runs_in('worker a', 1))
        self.assertEqual(1, job.tries)
        job.begin_attempt('worker b', time.time())
        job.end_attempt('conflict', time.time(), 'ConflictError')
        self.assertEqual(1, job.tries)
        self.assertRegex(repr(job.attempts[1]),
                         re.escape('<Attempt 2 by worker b: conflict>'))
