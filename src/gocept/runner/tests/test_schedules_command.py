"""gocept-jobs and schedules: ``schedules`` lists them, ``purge
--schedule`` removes the record of one no longer configured, and ``work``
refuses a ``<schedules>`` it cannot keep before anything runs."""

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
import unittest

import transaction
import ZODB.FileStorage

from gocept.runner import config
from gocept.runner import testing
from gocept.runner.jobs import command
from gocept.runner.jobs import store
from gocept.runner.jobs.scheduler import Scheduler
from gocept.runner.jobs.scheduler import configured
from gocept.runner.tests import jobprograms
from gocept.runner.tests import schedulejobs


NAME = 'gocept.runner.tests.schedulejobs:'
# A time as the command prints it.
TIME = r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d{4}'
NONE = ' ' * 23
STOPPED = ' ' * 17


def configure(**entries):
    """Make `entries` (function name -> schedule) the <schedules>."""
    config.configure_schedules(types.SimpleNamespace(
        schedules=types.SimpleNamespace(entries={
            f'{schedulejobs.MODULE}.{name}': spec
            for name, spec in entries.items()})))


class CommandsTest(unittest.TestCase):

    def setUp(self):
        directory = tempfile.mkdtemp(prefix='gocept.runner.schedules.')
        self.addCleanup(shutil.rmtree, directory)
        self.client = jobprograms.Client.open(
            ZODB.FileStorage.FileStorage(os.path.join(directory, 'Data.fs')))
        self.addCleanup(self.client.close)
        self.addCleanup(config.configure_schedules, None)
        # As a worker's heartbeat makes it.
        self.client.jobs()
        transaction.commit()
        self.parser = command.make_parser()

    def call(self, *argv):
        """Run the sub-command `argv` on the client's database; return its
        exit status, stdout and stderr."""
        args = self.parser.parse_args(list(argv))
        stdout, stderr = io.StringIO(), io.StringIO()
        transaction.begin()
        with contextlib.redirect_stdout(stdout), \
                contextlib.redirect_stderr(stderr):
            code = command.COMMANDS[args.command](
                lambda: store.jobs_of(self.client.connection), args)
        transaction.abort()
        return code, stdout.getvalue(), stderr.getvalue()

    def keep(self, now):
        """Let a worker's scheduler look at the configured schedules at
        `now`."""
        Scheduler(configured(config.schedules()), self.client.connection,
                  'host:1:a', lambda: now).tick()

    def finish(self):
        jobs = self.client.fresh()
        job, _ = jobs.take(time.time() + 3600)
        job.begin_attempt('host:1:a/1', time.time())
        job.end_attempt('done', time.time())
        jobs.done(job, time.time())
        transaction.commit()

    def test_schedules_gives_a_line_a_schedule(self):
        configure(every_second='', nightly='', every_second_all='300')
        self.assertEqual((0, ''), self.call('schedules')[::2])
        now = time.time()
        self.keep(now - 2.5)
        self.keep(now - 1.5)
        self.finish()
        self.keep(now - 0.5)
        configure(every_second_all='300', nightly='')
        code, out, err = self.call('schedules')
        self.assertEqual((0, ''), (code, err))
        lines = out.splitlines()
        self.assertEqual(3, len(lines), out)
        self.assertRegex(
            lines[0], f'^{TIME}  pending  stopped{STOPPED}  {NAME}every_second'
                      '  -$')
        self.assertRegex(
            lines[1], f'^-{NONE}  -        {TIME}  {NAME}every_second_all'
                      '  every 300 seconds$')
        self.assertRegex(
            lines[2], f'^-{NONE}  -        {TIME}  {NAME}nightly'
                      '  30 2 \\* \\* \\*$')
        self.assertEqual(command.timestamp(int(now - 0.5)), lines[0][:24])
        next_300 = (int(now) // 300 + 1) * 300
        self.assertIn(command.timestamp(next_300), lines[1])

    def test_schedules_gives_how_the_last_job_ended(self):
        configure(every_second='')
        now = time.time()
        self.keep(now - 2.5)
        self.keep(now - 1.5)
        self.finish()
        code, out, _ = self.call('schedules')
        self.assertRegex(out, f'^{TIME}  done     {TIME}  {NAME}every_second'
                              '  every 1 seconds\n$')
        self.assertEqual(command.timestamp(int(now - 1.5)), out[:24])
        self.assertEqual(command.timestamp(int(now - 1.5) + 1), out[35:59])
        # Once its job is no longer kept, from the schedule's record.
        jobs = self.client.fresh()
        jobs.keep_done = 0
        jobs.expire(time.time() + 1)
        transaction.commit()
        self.assertEqual(out, self.call('schedules')[1])

    def test_purge_removes_the_record_of_a_schedule_no_longer_kept(self):
        configure(every_second='', nightly='')
        self.keep(time.time())
        self.assertEqual(
            (1, '', f'gocept-jobs purge: schedule {NAME}nightly is in'
                    ' <schedules> of zope.conf: remove it there first\n'),
            self.call('purge', '--schedule', f'{NAME}nightly'))
        configure(every_second='')
        self.assertEqual(
            (0, f'purged schedule {NAME}nightly\n', ''),
            self.call('purge', '--schedule', f'{NAME}nightly'))
        self.assertEqual([f'{NAME}every_second'],
                         list(self.client.fresh().schedules()))
        self.assertEqual(
            (1, '', 'gocept-jobs purge: no schedule nightly\n'),
            self.call('purge', '--schedule', 'nightly'))


class ProgramTest(unittest.TestCase):
    """The workers of gocept-jobs and gocept-runner keep the schedules, and
    refuse a <schedules> they cannot keep."""

    layer = testing.JobsLayer

    def test_gocept_runner_s_workers_keep_the_schedules_too(self):
        directory = tempfile.mkdtemp(prefix='gocept.runner.schedules.')
        self.addCleanup(shutil.rmtree, directory)
        conf = jobprograms.write_zope_conf(
            directory, '<zodb>\n  <filestorage>\n'
            f'    path {directory}/Data.fs\n  </filestorage>\n</zodb>\n',
            extra=f'<schedules>\n  {schedulejobs.MODULE}.every_second\n'
                  '</schedules>\n')
        result = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), 'gocept-runner'),
             '-C', conf, '--max-runtime', '3', 'gocept.runner.jobs:work',
             'gocept.runner.jobs:work'],
            capture_output=True, text=True, cwd=directory, timeout=120)
        self.assertEqual(75, result.returncode, result.stderr)
        storage = ZODB.FileStorage.FileStorage(
            os.path.join(directory, 'Data.fs'), read_only=True)
        db = ZODB.DB(storage)
        try:
            with db.transaction() as connection:
                jobs = store.jobs_of(connection)
                done = [job.occurrence for job in jobs.records()
                        if job.schedule == NAME + 'every_second' and
                        job.state == 'done']
                self.assertGreaterEqual(len(done), 1, result.stdout)
                self.assertEqual(len(done), len(set(done)))
                self.assertEqual(len(done), connection.root()[
                    'every_second'].count)
        finally:
            db.close()

    def test_a_function_that_cannot_be_imported_is_status_2(self):
        directory = tempfile.mkdtemp(prefix='gocept.runner.schedules.')
        self.addCleanup(shutil.rmtree, directory)
        for entry, error in [
                ('myapp.reports.nightly', 'Cannot import the scheduled job'
                 ' function myapp.reports.nightly (<schedules> of'
                 " zope.conf): ModuleNotFoundError: No module named 'myapp'"),
                (f'{schedulejobs.MODULE}.nightly 0 3 * *',
                 f'{schedulejobs.MODULE}.nightly (<schedules> of zope.conf):'
                 " '0 3 * *' is not a cron expression: it has five fields"
                 ' (minute hour day month weekday), or six with the seconds'
                 ' last')]:
            conf = jobprograms.write_zope_conf(
                directory, '<zodb>\n  <filestorage>\n'
                f'    path {directory}/Data.fs\n  </filestorage>\n</zodb>\n',
                extra=f'<schedules>\n  {entry}\n</schedules>\n')
            result = subprocess.run(
                [sys.executable, '-m', 'gocept.runner.jobs', 'work', '-C',
                 conf], capture_output=True, text=True, cwd=directory,
                timeout=120)
            self.assertEqual(2, result.returncode, result.stderr)
            self.assertEqual(
                f'python -m gocept.runner.jobs work: {error}\n',
                result.stderr)
            # Nothing ran: no worker process was ever registered.
            storage = ZODB.FileStorage.FileStorage(
                os.path.join(directory, 'Data.fs'), read_only=True)
            db = ZODB.DB(storage)
            try:
                with db.transaction() as connection:
                    self.assertNotIn(store.ROOT_KEY, connection.root())
            finally:
                db.close()
