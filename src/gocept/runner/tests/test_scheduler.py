"""The scheduler of the job workers, in the test's process on a
FileStorage, with a test clock: which occurrences it puts, catches up or
skips, and that of two schedulers trying one occurrence one puts it.

Worker processes keeping schedules together are tested against ZEO and
PostgreSQL in test_schedules_workers.
"""

import datetime
import logging
import re
import threading
import time
import types
import unittest
import zoneinfo

import transaction

from gocept.runner import testing
from gocept.runner.interfaces import ConfigurationError
from gocept.runner.jobs import record
from gocept.runner.jobs import store
from gocept.runner.jobs import worker
from gocept.runner.jobs.schedule import Schedule
from gocept.runner.jobs.scheduler import HANDOVER
from gocept.runner.jobs.scheduler import LATE
from gocept.runner.jobs.scheduler import LIMIT
from gocept.runner.jobs.scheduler import LOGGED
from gocept.runner.jobs.scheduler import Entry
from gocept.runner.jobs.scheduler import Scheduler
from gocept.runner.jobs.scheduler import configured
from gocept.runner.jobs.scheduler import local_time
from gocept.runner.tests import fakeloop
from gocept.runner.tests import schedulejobs


START = 1_800_000_000.0
NAME = 'gocept.runner.tests.schedulejobs:'


class Clock:
    """A test clock: the time is what the test sets."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


class DatabaseTest(unittest.TestCase):
    """A FileStorage with a Jobs container, and a test clock."""

    def setUp(self):
        self.db = testing.file_storage_db(self)
        self.connection = self.db.open()
        self.addCleanup(self.connection.close)
        self.addCleanup(transaction.abort)
        store.jobs_of(self.connection, create=True)
        transaction.commit()
        self.clock = Clock(START)

    def scheduler(self, *functions, connection=None, key='host:1:a',
                  schedule=None):
        entries = [Entry(function, schedule or function.schedule)
                   for function in functions]
        return Scheduler(entries, connection or self.connection, key,
                         self.clock)

    def jobs(self):
        transaction.begin()
        return store.jobs_of(self.connection)

    def occurrences(self, name):
        """The occurrences of the jobs put for the schedule `name`."""
        return sorted(job.occurrence - START for job in self.jobs().records()
                      if job.schedule == NAME + name)

    def finish(self, outcome='done'):
        """End the pending jobs as a worker does, at the clock's time."""
        jobs = self.jobs()
        while True:
            job, _ = jobs.take(self.clock.now + 1)
            if job is None:
                break
            job.begin_attempt('host:1:a/1', self.clock.now)
            job.end_attempt(outcome, self.clock.now)
            if outcome == 'done':
                jobs.done(job, self.clock.now)
            else:
                jobs.fail(job)
        transaction.commit()


class SchedulerTest(DatabaseTest):

    def test_a_schedule_starts_with_its_first_occurrence_after_now(self):
        scheduler = self.scheduler(schedulejobs.every_second)
        other = self.scheduler(schedulejobs.every_second, key='host:2:b')
        self.assertEqual(0, scheduler.tick())
        schedule = self.jobs().schedules()[NAME + 'every_second']
        self.assertEqual(START, schedule.last)
        # Its first occurrence comes in a second, for the process that made
        # the record (or put the last); for others a little later.
        self.assertEqual(1, scheduler.tick())
        self.assertEqual(1 + HANDOVER, other.tick())
        self.assertEqual([], self.occurrences('every_second'))
        self.clock.now += 1.1
        self.assertEqual(0, scheduler.tick())
        self.assertEqual([1], self.occurrences('every_second'))
        self.finish()
        self.assertEqual(0.9, round(scheduler.tick(), 6))
        self.assertEqual(0.9 + HANDOVER, round(other.tick(), 6))

    def test_a_job_still_pending_or_running_holds_the_next_occurrence(self):
        scheduler = self.scheduler(schedulejobs.slow)
        scheduler.tick()
        self.clock.now += 1.5
        scheduler.tick()
        self.clock.now += 1
        self.assertIsNone(scheduler.tick())
        self.clock.now += 1
        self.assertIsNone(scheduler.tick())
        self.assertEqual([1], self.occurrences('slow'))
        self.finish()
        with self.assertLogs('gocept.runner.jobs', logging.WARNING) as logs:
            self.assertEqual(0, scheduler.tick())
        # catch_up='latest': the last of them runs.
        self.assertEqual([1, 3], self.occurrences('slow'))
        self.assertEqual(
            [f'WARNING:gocept.runner.jobs:Schedule {NAME}slow missed its'
             f' occurrence at {local_time(START + 2)} (the job of'
             f' {local_time(START + 1)} still ran); skipped'], logs.output)

    def test_an_overlapping_schedule_puts_its_jobs_regardless(self):
        scheduler = self.scheduler(schedulejobs.slow_overlapping)
        scheduler.tick()
        for _ in range(3):
            self.clock.now += 1
            self.assertEqual(0, scheduler.tick())
        self.assertEqual([1, 2, 3], self.occurrences('slow_overlapping'))

    def missed(self, function, seconds, schedule=None):
        """Tick once, then after `seconds`; return the log lines."""
        scheduler = self.scheduler(function, schedule=schedule)
        scheduler.tick()
        self.clock.now += seconds
        with self.assertLogs('gocept.runner.jobs', logging.DEBUG) as logs:
            scheduler.tick()
        return [line.split(':', 2)[2] for line in logs.output]

    def test_catch_up_latest_runs_the_latest_of_the_missed(self):
        lines = self.missed(schedulejobs.every_second, 5.5)
        self.assertEqual([5], self.occurrences('every_second'))
        job_id = self.jobs().schedules()[NAME + 'every_second'].job_id
        self.assertEqual([
            f'Schedule {NAME}every_second missed its occurrence at'
            f' {local_time(START + number)} (no worker put it in time);'
            ' skipped' for number in range(1, 5)] + [
            f'Schedule {NAME}every_second: job {job_id} put for its'
            f' occurrence at {local_time(START + 5)}'], lines)

    def test_many_missed_occurrences_are_logged_up_to_a_limit(self):
        lines = self.missed(schedulejobs.every_second, 150.5)
        self.assertEqual([150], self.occurrences('every_second'))
        self.assertEqual(LOGGED + 2, len(lines))
        self.assertTrue(lines[LOGGED - 1].startswith(
            f'Schedule {NAME}every_second missed its occurrence at'
            f' {local_time(START + LOGGED)} '))
        self.assertEqual(
            f'Schedule {NAME}every_second missed more occurrences, up to'
            f' {local_time(START + 149)}; skipped', lines[LOGGED])
        self.assertIn(' put for its occurrence at ', lines[-1])
        # More than are dealt with at once (LIMIT): the latest runs.
        self.finish()
        lines = self.missed(schedulejobs.every_second, LIMIT + 500.5)
        self.assertEqual([150, LIMIT + 651], self.occurrences('every_second'))
        self.assertEqual(
            f'Schedule {NAME}every_second missed more occurrences, up to'
            f' {local_time(START + LIMIT + 650)}; skipped', lines[LOGGED])

    def test_catch_up_latest_runs_an_occurrence_that_is_late(self):
        # Late: LATE seconds past, and no later one due.
        lines = self.missed(schedulejobs.every_second, 120 + LATE + 1,
                            Schedule(120))
        self.assertEqual([120], self.occurrences('every_second'))
        self.assertEqual(1, len(lines))
        self.assertRegex(
            lines[0], re.escape(
                f'Schedule {NAME}every_second missed its occurrence at'
                f' {local_time(START + 120)} (no worker put it in time); job')
            + ' [0-9a-f]{32} runs it late')

    def test_catch_up_none_skips_all_that_are_late(self):
        lines = self.missed(schedulejobs.every_second_none, 5.5)
        # The latest is on time.
        self.assertEqual([5], self.occurrences('every_second_none'))
        self.assertEqual(5, len(lines))
        self.assertTrue(all(line.endswith('; skipped') for line in lines[:4]))
        self.finish()
        lines = self.missed(schedulejobs.every_second_none, 120 + LATE + 1,
                            Schedule(120))
        self.assertEqual([5], self.occurrences('every_second_none'))
        self.assertEqual([
            f'Schedule {NAME}every_second_none missed its occurrence at'
            f' {local_time(START + 120)} (no worker put it in time); skipped'],
            lines)

    def test_catch_up_all_runs_each_missed_one_after_the_other(self):
        scheduler = self.scheduler(schedulejobs.every_second_all)
        scheduler.tick()
        self.clock.now += 3.5
        lines = []
        for _ in range(3):
            with self.assertLogs('gocept.runner.jobs', logging.DEBUG) as logs:
                scheduler.tick()
            lines.extend(line.split(':', 2)[2] for line in logs.output)
            # Held while its job is pending.
            self.assertIsNone(scheduler.tick())
            self.finish()
        self.assertEqual([1, 2, 3], self.occurrences('every_second_all'))
        self.assertEqual(3, len(lines))
        self.assertRegex(lines[0], 'missed its occurrence at .*; job .* runs'
                                   ' it late')
        self.assertRegex(lines[1], 'missed its occurrence at .*; job .* runs'
                                   ' it late')
        self.assertIn('put for its occurrence', lines[2])

    def test_a_nightly_job_runs_once_on_either_day_of_a_dst_change(self):
        berlin = zoneinfo.ZoneInfo('Europe/Berlin')
        for day, expected in (((2026, 3, 29), '03-29 03:00+0200'),
                              ((2026, 10, 25), '10-25 02:30+0200')):
            start = datetime.datetime(*day, 1, tzinfo=berlin).timestamp()
            self.clock.now = start
            # Kept from the day's 01:00 on.
            jobs = self.jobs()
            if NAME + 'nightly' in jobs.schedules():
                jobs.purge_schedule(NAME + 'nightly')
                transaction.commit()
            scheduler = self.scheduler(schedulejobs.nightly)
            with self.assertNoLogs('gocept.runner.jobs', logging.WARNING):
                # Every 30 seconds for four hours, as a worker ticks.
                for step in range(4 * 120):
                    self.clock.now = start + 30 * step
                    scheduler.tick()
                    self.finish()
            put = [job.occurrence for job in self.jobs().records()
                   if job.schedule == NAME + 'nightly' and
                   job.occurrence > start]
            self.assertEqual([expected], [
                datetime.datetime.fromtimestamp(t, berlin).strftime(
                    '%m-%d %H:%M%z') for t in put])

    def test_how_its_jobs_ended_is_kept_with_the_schedule(self):
        scheduler = self.scheduler(schedulejobs.every_second)
        scheduler.tick()
        self.clock.now += 1.5
        scheduler.tick()
        self.finish()
        outcome = self.jobs().schedules()[NAME + 'every_second'].outcome
        self.assertEqual(('done', START + 1.5, START + 1.5),
                         (outcome.outcome, outcome.at, outcome.last_success))
        self.clock.now += 1
        scheduler.tick()
        self.finish('error')
        outcome = self.jobs().schedules()[NAME + 'every_second'].outcome
        self.assertEqual(('failed', START + 2.5, START + 1.5),
                         (outcome.outcome, outcome.at, outcome.last_success))
        self.assertEqual(
            [record.DONE, record.FAILED],
            [job.state for job in sorted(self.jobs().records(),
                                         key=lambda job: job.occurrence)])

    def test_of_two_processes_trying_one_occurrence_one_puts_it(self):
        first = self.scheduler(schedulejobs.every_second)
        first.tick()
        self.clock.now += 1 + HANDOVER
        read = threading.Event()
        committed = threading.Event()
        results = {}

        def other():
            connection = self.db.open()
            try:
                second = self.scheduler(schedulejobs.every_second,
                                        connection=connection, key='host:2:b')
                transaction.begin()
                # Its view is of before the first's commit.
                store.jobs_of(connection).schedules()[
                    NAME + 'every_second'].last
                read.set()
                committed.wait(10)
                with self.assertLogs('gocept.runner.jobs',
                                     logging.DEBUG) as logs:
                    results['tick'] = second.tick()
                results['logs'] = logs.output
            finally:
                transaction.abort()
                connection.close()

        thread = threading.Thread(target=other)
        thread.start()
        read.wait(10)
        first.tick()
        committed.set()
        thread.join(10)
        self.assertEqual([1], self.occurrences('every_second'))
        self.assertEqual(0, results['tick'])
        # It conflicted, and looked again.
        self.assertEqual(
            ['DEBUG:gocept.runner.jobs:Schedules: a conflict putting due jobs'
             ' (another worker put them, mostly); looking again'],
            results['logs'])
        self.assertEqual(
            'host:1:a',
            self.jobs().schedules()[NAME + 'every_second'].put_by)


class ConfiguredTest(unittest.TestCase):

    def error(self, entries):
        with self.assertRaises(ConfigurationError) as raised:
            configured(entries)
        return str(raised.exception)

    def test_each_entry_names_a_job_function_with_a_schedule(self):
        every, nightly, unscheduled = configured({
            f'{schedulejobs.MODULE}.every_second': '',
            f'{schedulejobs.MODULE}:nightly': ' 0 4 * * * ',
            f'{schedulejobs.MODULE}.unscheduled': '300'})
        self.assertIs(schedulejobs.every_second.schedule, every.schedule)
        self.assertEqual(NAME + 'every_second', every.name)
        self.assertEqual('0 4 * * *', str(nightly.schedule))
        # The override keeps the function's time zone.
        self.assertEqual('Europe/Berlin', str(nightly.schedule.timezone))
        self.assertEqual('every 300 seconds', str(unscheduled.schedule))

    def test_what_is_wrong_with_an_entry_is_one_line(self):
        self.assertEqual(
            'Cannot import the scheduled job function nosuchmodule.f'
            " (<schedules> of zope.conf): ModuleNotFoundError: No module"
            " named 'nosuchmodule'", self.error({'nosuchmodule.f': ''}))
        self.assertIn(
            "AttributeError: module 'gocept.runner.tests.schedulejobs' has"
            " no attribute 'missing'",
            self.error({f'{schedulejobs.MODULE}.missing': ''}))
        self.assertEqual(
            f'{schedulejobs.MODULE}.not_a_job (<schedules> of zope.conf) is'
            ' not a job function: decorate it with'
            ' gocept.runner.jobs.periodic',
            self.error({f'{schedulejobs.MODULE}.not_a_job': ''}))
        self.assertEqual(
            f'{schedulejobs.MODULE}.unscheduled (<schedules> of zope.conf)'
            ' has no schedule: give one after its name, or decorate it with'
            ' gocept.runner.jobs.periodic',
            self.error({f'{schedulejobs.MODULE}.unscheduled': ''}))
        self.assertEqual(
            f"{schedulejobs.MODULE}.nightly (<schedules> of zope.conf): '0 4"
            " * *' is not a cron expression: it has five fields (minute hour"
            ' day month weekday), or six with the seconds last',
            self.error({f'{schedulejobs.MODULE}.nightly': '0 4 * *'}))
        self.assertEqual(
            f'{schedulejobs.MODULE}:nightly (<schedules> of zope.conf) is'
            ' named twice', self.error({
                f'{schedulejobs.MODULE}.nightly': '',
                f'{schedulejobs.MODULE}:nightly': ''}))


class Broken(Schedule):
    """A schedule that fails to say its occurrences, once `broken`."""

    broken = False

    def after(self, instant):
        if self.broken:
            raise RuntimeError('broken schedule')
        return super().after(instant)


class WorkerTest(DatabaseTest):
    """A worker's tick with schedules."""

    def worker(self, *entries):
        return worker.JobWorker(
            fakeloop.FakeLoop(), self.connection,
            types.SimpleNamespace(key='host:1:a'), entries=entries)

    def test_a_worker_wakes_for_the_next_occurrence_before_its_poll(self):
        job_worker = self.worker(Entry(schedulejobs.every_second,
                                       Schedule(0.25)))
        job_worker.scheduler.clock = time.time
        # It makes the schedule's record; then waits for its occurrence.
        self.assertEqual(0, job_worker.tick())
        wait = job_worker.tick()
        self.assertTrue(0 <= wait <= 0.25, wait)

    def test_jobs_are_taken_whatever_befalls_the_schedules(self):
        broken = Broken(1)
        broken.broken = True
        job_worker = self.worker(Entry(schedulejobs.every_second, broken))
        job_worker.scheduler.clock = time.time
        # A record to look at.
        self.jobs().schedule_record(NAME + 'every_second', 0)
        transaction.commit()
        with self.assertLogs('gocept.runner.jobs', logging.ERROR) as logs:
            self.assertEqual(worker.POLL, job_worker.tick())
        self.assertIn('Worker host:1:a/', logs.output[0])
        self.assertIn('the schedules failed; taking jobs all the same',
                      logs.output[0])
        self.assertIn('RuntimeError: broken schedule', logs.output[0])
