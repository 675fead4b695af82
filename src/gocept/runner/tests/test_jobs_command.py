"""The gocept-jobs command: its parser and what each sub-command prints
and changes, on jobs in a database of the test's process; and, as a
program of its own, its exit statuses on a FileStorage.

The workers that gocept-jobs runs, and the retry that brings a failed job
back to them, are tested against every storage in test_jobs_workers.
"""

import argparse
import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import transaction
import ZODB.FileStorage
from ZODB.utils import oid_repr

from gocept.runner import testing
from gocept.runner.arguments import duration
from gocept.runner.jobs import attempts
from gocept.runner.jobs import command
from gocept.runner.jobs import store
from gocept.runner.tests import jobprograms


BIN = os.path.dirname(sys.executable)
FAIL = 'gocept.runner.tests.jobprograms:fail'
ADD = 'gocept.runner.tests.jobprograms:add'
# A time as the command prints it.
TIME = r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d{4}'


def fail_for_good(jobs, job_id, error='ValueError: boom', ended=None):
    """Let the job `job_id` of `jobs` fail for good, as a worker does."""
    job = jobs.get(job_id)
    taken, _ = jobs.take(time.time() + 1e6)
    assert taken is not None
    ended = time.time() if ended is None else ended
    job.begin_attempt('host:1:a/1', ended - 0.5)
    job.retries = 0
    attempts.end(jobs, job, 'error', ended, error,
                 f'Traceback (most recent call last):\n  ...\n{error}\n',
                 '0x0123456789abcdef')
    assert job.state == 'failed'
    return job


class ParserTest(unittest.TestCase):

    def usage_error(self, *argv):
        """The one line on stderr of argv's usage error (status 2)."""
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            with self.assertRaises(SystemExit) as raised:
                command.main(list(argv))
        self.assertEqual(2, raised.exception.code)
        self.assertEqual(1, stderr.getvalue().count('\n'), stderr.getvalue())
        return stderr.getvalue()

    def test_usage_errors_are_one_line_and_status_2(self):
        self.assertIn('the following arguments are required: COMMAND',
                      self.usage_error())
        self.assertIn("invalid choice: 'lsit'", self.usage_error('lsit'))
        self.assertEqual(
            'gocept-jobs retry: give the ids of failed jobs, or --failed'
            ' (see --help)\n', self.usage_error('retry'))
        self.assertIn('gocept-jobs retry: give the ids',
                      self.usage_error('retry', 'abc', '--failed'))
        self.assertIn('--failed', self.usage_error('purge'))
        self.assertIn('not allowed with argument',
                      self.usage_error('list', '--failed', '--done'))
        self.assertIn("'3y' is not a duration", self.usage_error(
            'purge', '--failed', '--older-than', '3y'))
        self.assertIn("'0' is not a positive whole number",
                      self.usage_error('work', '--workers', '0'))
        self.assertIn('the following arguments are required: ID',
                      self.usage_error('show'))

    def test_the_help_is_the_same_whatever_the_terminal(self):
        def help(columns):
            stdout = io.StringIO()
            os.environ['COLUMNS'] = columns
            try:
                with contextlib.redirect_stdout(stdout):
                    with self.assertRaises(SystemExit):
                        command.main(['list', '--help'])
            finally:
                del os.environ['COLUMNS']
            return stdout.getvalue()
        text = help('40')
        self.assertEqual(text, help('200'))
        self.assertLessEqual(max(len(line) for line in text.splitlines()),
                             78)
        self.assertIn('Exit status: 0 when done', text)

    def test_config_before_or_after_the_command(self):
        parser = command.make_parser()
        for argv in (['-C', 'a.conf', 'list'], ['list', '-C', 'a.conf']):
            args = parser.parse_args(argv)
            self.assertEqual('a.conf', args.config or args.config_before)

    def test_durations(self):
        self.assertEqual(
            [90, 900, 36 * 3600, 30 * 86400, 7 * 86400, 0.5],
            [duration(value) for value in
             ('90', '15m', '36h', '30d', '1w', '.5s')])
        for value in ('', 'x', '-1', '3y', 'nan', '1e3', '1 d 2 h'):
            with self.assertRaises(argparse.ArgumentTypeError):
                duration(value)


class CommandsTest(unittest.TestCase):
    """The sub-commands on the Jobs container of a database here."""

    def setUp(self):
        directory = tempfile.mkdtemp(prefix='gocept.runner.jobs.')
        self.addCleanup(shutil.rmtree, directory)
        self.client = jobprograms.Client.open(
            ZODB.FileStorage.FileStorage(os.path.join(directory, 'Data.fs')))
        self.addCleanup(self.client.close)
        self.parser = command.make_parser()

    def call(self, *argv):
        """Run the sub-command `argv` on the client's jobs, in a fresh
        transaction; return its exit status, stdout and stderr."""
        args = self.parser.parse_args(list(argv))
        stdout, stderr = io.StringIO(), io.StringIO()
        transaction.begin()
        with contextlib.redirect_stdout(stdout), \
                contextlib.redirect_stderr(stderr):
            code = command.COMMANDS[args.command](
                lambda: store.jobs_of(self.client.connection), args)
        transaction.abort()
        return code, stdout.getvalue(), stderr.getvalue()

    def put(self, *args, **options):
        job_id = jobprograms.add.apply_async(args, **options)
        transaction.commit()
        return job_id

    def test_list_gives_a_line_a_job_oldest_first(self):
        first = self.put(1, eta=time.time() - 60)
        later = self.put(2, countdown=3600)
        failed = self.put(3, eta=time.time() - 30)
        fail_for_good(self.client.jobs(), failed, 'ValueError: no  3\n')
        transaction.commit()
        code, out, err = self.call('list')
        self.assertEqual((0, ''), (code, err))
        lines = out.splitlines()
        self.assertEqual(3, len(lines), out)
        self.assertRegex(lines[0], f'^{first}  pending    0  {TIME}  {ADD}$')
        self.assertRegex(
            lines[1],
            f'^{failed}  failed     1  {TIME}  {ADD}  ValueError: no 3$')
        self.assertRegex(lines[2], f'^{later}  delayed    0  {TIME}  {ADD}$')
        self.assertEqual(command.timestamp(self.client.jobs().get(
            later).eta), re.search(TIME, lines[2]).group())
        for state, ids in (('pending', [first]), ('delayed', [later]),
                           ('failed', [failed]), ('done', []),
                           ('running', [])):
            code, out, _ = self.call('list', f'--{state}')
            self.assertEqual(ids, [line.split()[0]
                                   for line in out.splitlines()], state)

    def test_list_of_a_database_without_jobs_is_empty(self):
        self.assertNotIn(store.ROOT_KEY, self.client.root)
        self.assertEqual((0, '', ''), self.call('list'))

    def test_show_gives_everything_a_record_keeps(self):
        counter = self.client.counters(1)[0]
        job_id = jobprograms.add.apply_async(
            (counter, [1, 'a']), {'b': {'c': (2,)}})
        transaction.commit()
        fail_for_good(self.client.jobs(), job_id)
        transaction.commit()
        code, out, err = self.call('show', job_id)
        self.assertEqual((0, ''), (code, err))
        oid = oid_repr(counter._p_oid)  # ZODB's way: 0x03
        self.assertRegex(out, '^' + '\n'.join([
            f'Job {job_id}',
            f'Name: {ADD}',
            'Status: failed',
            re.escape('Arguments: <gocept.runner.tests.jobprograms.Counter'
                      f' oid {oid}>, [1, \'a\'],'
                      " b={'c': (2,)}"),
            'Principal: none',
            f'Put: {TIME}',
            f'Due: {TIME}',
            'Attempts: 1; failed, counted against its 0 retries: 1',
            'Retry pause: 10 s, doubling; time limit: none',
            f'Attempt 1: by host:1:a/1, started at {TIME}, error at {TIME}',
            '  taken in transaction 0x0123456789abcdef',
            '  ValueError: boom',
            '  Traceback \\(most recent call last\\):',
            '    ...',
            '  ValueError: boom',
        ]) + '\n$')

    def test_show_gives_the_result_of_a_done_job(self):
        job_id = self.put(2, 3)
        jobs = self.client.jobs()
        job, _ = jobs.take(time.time())
        job.begin_attempt('host:1:a/1', time.time())
        job.result = 5
        job.end_attempt('done', time.time())
        jobs.done(job, time.time())
        transaction.commit()
        code, out, _ = self.call('show', job_id)
        self.assertIn('\nStatus: done\nArguments: 2, 3\n', out)
        self.assertIn('\nResult: 5\n', out)
        self.assertRegex(out, f'\nAttempt 1: by host:1:a/1, started at'
                              f' {TIME}, done at {TIME}\n$')

    def test_an_unknown_id_is_one_line_and_status_1(self):
        self.assertEqual(
            (1, '', 'gocept-jobs show: no job nope (unknown, or no longer'
                    ' kept)\n'), self.call('show', 'nope'))

    def test_retry_queues_failed_jobs_with_all_their_retries(self):
        ids = [self.put(number) for number in range(3)]
        for job_id in ids:
            fail_for_good(self.client.jobs(), job_id)
        transaction.commit()
        self.assertEqual((0, 'retried 1 failed job\n', ''),
                         self.call('retry', ids[0], ids[0]))
        job = self.client.record(ids[0])
        self.assertEqual('pending', job.state)
        self.assertEqual(0, job.tries)
        self.assertEqual(1, len(job.attempts))
        self.assertLessEqual(job.eta, time.time())
        self.assertEqual(sorted(ids[1:]), sorted(
            job.id for job in self.client.jobs().failed()))
        self.assertEqual((0, 'retried 2 failed jobs\n', ''),
                         self.call('retry', '--failed'))
        self.assertEqual([], list(self.client.fresh().failed()))
        self.assertEqual(3, len(self.client.jobs()))
        # Taken again, and it fails at once: its retries are 0.
        jobs = self.client.fresh()
        job = jobs.get(ids[1])
        taken, _ = jobs.take(time.time())
        job = taken
        job.begin_attempt('host:1:a/1', time.time())
        ending = attempts.end(jobs, job, 'error', time.time(), 'E: again')
        self.assertEqual('failed', ending.what)
        self.assertEqual(1, job.tries)

    def test_retry_changes_nothing_unless_every_id_is_a_failed_job(self):
        failed = self.put(1)
        fail_for_good(self.client.jobs(), failed)
        pending = self.put(2)
        transaction.commit()
        self.assertEqual(
            (1, '', f'gocept-jobs retry: job {ADD} {pending} is pending, not'
                    ' failed\n'), self.call('retry', failed, pending))
        self.assertEqual(
            (1, '', 'gocept-jobs retry: no job nope (unknown, or no longer'
                    ' kept)\n'), self.call('retry', failed, 'nope'))
        self.assertEqual('failed', self.client.record(failed).state)

    def test_purge_removes_failed_jobs_older_than_asked(self):
        old = self.put(1)
        fail_for_good(self.client.jobs(), old, ended=time.time() - 7200)
        new = self.put(2)
        fail_for_good(self.client.jobs(), new)
        pending = self.put(3)
        transaction.commit()
        self.assertEqual((0, 'purged 1 failed job\n', ''),
                         self.call('purge', '--failed', '--older-than', '1h'))
        self.assertIsNone(self.client.record(old))
        self.assertEqual((0, 'purged 1 failed job\n', ''),
                         self.call('purge', '--failed'))
        self.assertIsNone(self.client.record(new))
        self.assertEqual('pending', self.client.record(pending).state)
        self.assertEqual((0, 'purged 0 failed jobs\n', ''),
                         self.call('purge', '--failed'))

    def test_retry_and_purge_commit_in_batches(self):
        ids = [self.put(number) for number in range(5)]
        for job_id in ids:
            fail_for_good(self.client.jobs(), job_id)
        transaction.commit()
        db = self.client.db
        before = len(db.undoLog(0, 1000))
        self.patch_batch(2)
        self.assertEqual((0, 'retried 5 failed jobs\n', ''),
                         self.call('retry', '--failed'))
        self.assertEqual(5, len(self.client.fresh()))
        log = db.undoLog(0, 1000)
        self.assertEqual(3, len(log) - before)
        self.assertEqual('gocept-jobs retry: 1 failed job',
                         log[0]['description'])

    def patch_batch(self, size):
        batch = command.BATCH
        command.BATCH = size
        self.addCleanup(setattr, command, 'BATCH', batch)

    def test_values_are_described_without_addresses(self):
        counter = self.client.counters(1)[0]
        transaction.commit()
        self.assertRegex(
            command.describe(counter),
            r'^<gocept.runner.tests.jobprograms.Counter oid 0x[0-9a-f]+>$')
        self.assertEqual("(1,)", command.describe((1,)))
        self.assertEqual("{'a': [None, ()]}",
                         command.describe({'a': [None, ()]}))
        self.assertEqual('none', command.describe_args((), {}))


class ProgramTest(unittest.TestCase):
    """gocept-jobs as a program of its own on a FileStorage."""

    layer = testing.JobsLayer

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='gocept.runner.jobs.')
        self.addCleanup(shutil.rmtree, self.dir)
        self.conf = jobprograms.write_zope_conf(
            self.dir, '<zodb>\n  <filestorage>\n'
                      f'    path {self.dir}/Data.fs\n  </filestorage>\n'
                      '</zodb>\n')

    def run_command(self, *argv, program=None):
        program = program or [sys.executable, '-m', 'gocept.runner.jobs']
        return subprocess.run(
            [*program, *argv], capture_output=True, text=True,
            cwd=self.dir, timeout=120)

    def test_the_console_script_and_python_m(self):
        for program, prog in (
                ([os.path.join(BIN, 'gocept-jobs')], 'gocept-jobs'),
                ([sys.executable, '-m', 'gocept.runner.jobs'],
                 'python -m gocept.runner.jobs')):
            result = self.run_command('show', '-C', self.conf, 'nope',
                                      program=program)
            self.assertEqual(1, result.returncode, result.stderr)
            self.assertEqual(f'{prog} show: no job nope (unknown, or no'
                             ' longer kept)\n', result.stderr)
            self.assertEqual([], [
                line for line in result.stdout.splitlines()
                if not line.startswith('DEBUG ')])

    def test_a_missing_zope_conf_is_one_line_and_status_2(self):
        result = self.run_command('-C', 'missing.conf', 'list')
        self.assertEqual(2, result.returncode)
        self.assertEqual('python -m gocept.runner.jobs list: Configuration'
                         ' file not found: missing.conf\n', result.stderr)

    def test_an_unreachable_database_is_status_1_not_2(self):
        port = testing.free_port()
        conf = jobprograms.write_zope_conf(
            self.dir, '<zodb>\n  <zeoclient>\n'
                      f'    server 127.0.0.1:{port}\n    wait false\n'
                      '  </zeoclient>\n</zodb>\n')
        result = self.run_command('list', '-C', conf)
        self.assertEqual(1, result.returncode, result.stderr)
        self.assertEqual(1, result.stderr.count('\n'), result.stderr)
