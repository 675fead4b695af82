"""Schedules kept by four worker processes on a ZEO server and on a
PostgreSQL server (RelStorage): each occurrence runs once, a process
killed does not lose the next, and missed occurrences are caught up as
their schedule says and logged once each.

The test looks at the jobs that the schedules put through a client of the
database of its own; each job knows the occurrence it was put for.
"""

import collections
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

import transaction

from gocept.runner import testing
from gocept.runner.jobs import store
from gocept.runner.jobs.scheduler import local_time
from gocept.runner.tests import jobprograms
from gocept.runner.tests import programs
from gocept.runner.tests import schedulejobs


NAME = 'gocept.runner.tests.schedulejobs:'
# Seconds a test waits for its workers, at most.
TIMEOUT = 120
PROCESSES = 4
# Seconds the schedules run.
RUN = 20
DEAD_AFTER = 3


class Scenarios:

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='gocept.runner.schedules.')
        self.addCleanup(shutil.rmtree, self.dir)
        self.processes = []
        self.addCleanup(self.kill_processes)
        with self.client() as client:
            transaction.begin()
            client.root[store.ROOT_KEY] = store.Jobs()
            client.root[store.ROOT_KEY].dead_after = DEAD_AFTER
            # The server may have the counts of others' runs.
            for name in list(client.root):
                if isinstance(client.root[name], schedulejobs.Runs):
                    del client.root[name]
            transaction.commit()

    def kill_processes(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    @contextlib.contextmanager
    def client(self):
        with jobprograms.client(self.zodb_section()) as c:
            yield c

    def keep(self, *names):
        """Write zope.conf with the schedules of the functions `names`."""
        lines = ''.join(f'  {schedulejobs.MODULE}.{name}\n' for name in names)
        testing.write_zope_conf(
            self.dir, self.zodb_section(),
            log=programs.LOG.format(level='INFO', log='STDOUT'),
            site_zcml=programs.MINIMAL_ZCML,
            extra=f'<schedules>\n{lines}</schedules>\n')

    def start(self, count=PROCESSES):
        """Start `count` worker processes, which append their log to the
        file ``output``, unbuffered: a line written in two parts could have
        another process's between them."""
        started = []
        for _ in range(count):
            with open(os.path.join(self.dir, 'output'), 'ab') as output:
                started.append(subprocess.Popen(
                    [sys.executable, '-m', jobprograms.MODULE,
                     os.path.join(self.dir, 'zope.conf')],
                    stdout=output, stderr=output,
                    env=dict(os.environ, PYTHONUNBUFFERED='1')))
        self.processes.extend(started)
        return started

    def stop(self, processes):
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                self.assertEqual(0, process.wait(TIMEOUT), self.output())
            except Exception:
                raise AssertionError(
                    f'Worker still running after {TIMEOUT} s:\n'
                    f'{self.output()}')

    def output(self):
        return jobprograms.output(self.dir)

    def lines(self, level):
        return [line for line in self.output().splitlines()
                if line.startswith(f'{level} gocept.runner.jobs ')]

    def jobs_of(self, client, name):
        """The jobs of the schedule of `name`, by occurrence, fresh."""
        return sorted((job for job in client.fresh().records()
                       if job.schedule == NAME + name),
                      key=lambda job: job.occurrence)

    def wait_until(self, client, condition, message):
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            self.assertLess(time.monotonic(), deadline,
                            f'{message}\n{self.output()}')
            time.sleep(0.1)

    def done(self, client, name, count):
        """Whether `count` jobs of `name` are done."""
        return sum(job.state == 'done'
                   for job in self.jobs_of(client, name)) >= count

    def assert_each_once(self, jobs, states=('done',)):
        """Each occurrence from the first to the last has one job, in
        `states`; return the occurrences."""
        occurrences = [job.occurrence for job in jobs]
        self.assertEqual(
            [], [o for o, n in collections.Counter(occurrences).items()
                 if n > 1], 'occurrences put twice')
        self.assertEqual(
            list(range(int(occurrences[0]), int(occurrences[-1]) + 1)),
            occurrences, 'occurrences missed')
        # Jobs put before the workers stopped may still wait.
        states = collections.Counter(job.state for job in jobs)
        self.assertLessEqual(set(states), {'done', 'pending'}, states)
        self.assertLessEqual(states['pending'], 1, states)
        return occurrences

    def missed(self, name, how):
        """The occurrences (times, as logged) that the log says `name`
        missed, with `how` they were dealt with ('skipped', 'runs it
        late'), and how often each."""
        pattern = re.compile(
            f'^WARNING gocept.runner.jobs Schedule {NAME}{name} missed its'
            f' occurrence at (.*?) \\(.*\\); (?:job \\w+ )?{how}$')
        matches = map(pattern.match, self.output().splitlines())
        return collections.Counter(
            match.group(1) for match in matches if match)

    def test_four_processes_run_each_occurrence_once(self):
        self.keep('every_second')
        workers = self.start()
        with self.client() as client:
            self.wait_until(client, lambda: self.done(
                client, 'every_second', 1), 'No schedule ran')
            time.sleep(RUN)
            self.stop(workers)
            jobs = self.jobs_of(client, 'every_second')
            self.assert_each_once(jobs)
            self.assertGreaterEqual(len(jobs), RUN - 2)
            done = sum(job.state == 'done' for job in jobs)
            self.assertEqual(done, client.root['every_second'].count)
            for job in jobs:
                self.assertEqual(['done'] * (job.state == 'done'), [
                    attempt.outcome for attempt in job.attempts])
        self.assertEqual([], self.lines('WARNING') + self.lines('ERROR'),
                         self.output())

    def test_sigkill_of_the_process_whose_turn_is_next_loses_nothing(self):
        self.keep('every_second')
        workers = self.start()
        by_pid = {worker.pid: worker for worker in workers}
        with self.client() as client:
            self.wait_until(client, lambda: self.done(
                client, 'every_second', 2), 'No schedule ran')
            # Just after an occurrence's job is done: the process that put
            # it would put the next.
            deadline = time.monotonic() + TIMEOUT
            while True:
                self.assertLess(time.monotonic(), deadline)
                schedule = client.fresh().schedules()[NAME + 'every_second']
                job = client.jobs().get(schedule.job_id)
                if job.state == 'done' and (
                        time.time() < schedule.occurrence + 0.6):
                    break
                time.sleep(0.02)
            pid = int(schedule.put_by.split(':')[1])
            victim = by_pid[pid]
            victim.send_signal(signal.SIGKILL)
            following = schedule.occurrence + 1
            self.assertEqual(-signal.SIGKILL, victim.wait(TIMEOUT))
            time.sleep(5)
            self.stop([worker for worker in workers if worker is not victim])
            jobs = self.jobs_of(client, 'every_second')
            self.assert_each_once(jobs)
            job, = [job for job in jobs if job.occurrence == following]
            self.assertEqual('done', job.state)
            taken_by = int(job.attempts[0].worker.split(':')[1])
            self.assertNotEqual(pid, taken_by)
            # Put by another within a second or two of its time.
            self.assertLess(job.attempts[0].started - following, 2)
        self.assertEqual([], self.lines('ERROR'))
        self.assertEqual([], [line for line in self.lines('WARNING')
                              if 'missed' in line])

    def test_all_stopped_for_five_seconds_catch_up_as_documented(self):
        names = ('every_second', 'every_second_all', 'every_second_none')
        self.keep(*names)
        workers = self.start()
        with self.client() as client:
            self.wait_until(client, lambda: all(
                self.done(client, name, 3) for name in names),
                'Schedules did not run')
            self.stop(workers)
            time.sleep(5)
            restarted = time.time()
            workers = self.start()
            # Until 'all' has caught up, and the others have run after it.
            self.wait_until(client, lambda: all(
                self.jobs_of(client, name)[-1].occurrence > restarted + 3
                for name in names), 'Schedules did not run again')
            self.stop(workers)
            jobs = {name: self.jobs_of(client, name) for name in names}
        # 'all': every occurrence ran, those missed late, logged once each.
        occurrences = self.assert_each_once(jobs['every_second_all'])
        late = self.missed('every_second_all', 'runs it late')
        self.assertGreaterEqual(len(late), 4, self.output())
        self.assertEqual({1}, set(late.values()), late)
        self.assertLessEqual(
            set(late), {local_time(o) for o in occurrences})
        for name in 'every_second', 'every_second_none':
            # 'latest' and 'none': the missed occurrences are skipped (the
            # latest of them is on time again), logged once each.
            occurrences = [job.occurrence for job in jobs[name]]
            self.assertEqual(len(occurrences), len(set(occurrences)))
            skipped = [o for o in range(int(occurrences[0]),
                                        int(occurrences[-1]))
                       if o not in occurrences]
            self.assertGreaterEqual(len(skipped), 4, name)
            logged = self.missed(name, 'skipped')
            self.assertEqual({1}, set(logged.values()), logged)
            self.assertEqual(sorted(local_time(o) for o in skipped),
                             sorted(logged), name)
            self.assertEqual({}, self.missed(name, 'runs it late'))
        self.assertEqual([], self.lines('ERROR'))


class ZEOTest(Scenarios, unittest.TestCase):

    layer = testing.ZEO_LAYER

    def zodb_section(self):
        return self.layer.server.zodb_section()


class RelStorageTest(Scenarios, unittest.TestCase):

    layer = testing.POSTGRESQL_LAYER

    def setUp(self):
        if self.layer.server is None:
            self.skipTest(self.layer.missing)
        self.dbname = f'schedules_{uuid.uuid4().hex}'
        self.layer.server.create_database(self.dbname)
        self.addCleanup(self.layer.server.drop_database, self.dbname)
        super().setUp()

    def zodb_section(self):
        return self.layer.server.zodb_section(self.dbname)
