"""The worker, tick and job on log records, and JSON log lines
(gocept.runner.logging)."""

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import unittest

import transaction

from gocept.runner import testing
from gocept.runner.jobs.record import Job
from gocept.runner.logging import JSONFormatter
from gocept.runner.logging import WarnOnce
from gocept.runner.logging import job_context
from gocept.runner.logging import reset_loop
from gocept.runner.logging import set_loop
from gocept.runner.tests import jobprograms
from gocept.runner.tests import programs
from gocept.runner.tests import sentryprograms


log = logging.getLogger('gocept.runner.tests.test_logging')


class Loop:
    """What the context reads of a MainLoop."""

    name = 'worker'
    tick_count = 3


@contextlib.contextmanager
def loop_context(loop):
    token = set_loop(loop)
    try:
        yield
    finally:
        reset_loop(token)


def record(message='message %s', args=('one',), exc_info=None, **extra):
    return log.makeRecord(log.name, logging.INFO, __file__, 1, message,
                          args, exc_info, extra=extra or None)


class WarnOnceTest(unittest.TestCase):

    def test_once_at_warning_per_kind_then_at_debug_until_reset(self):
        log = logging.getLogger('gocept.runner.tests.warnonce')
        warn = WarnOnce(log)
        with self.assertLogs(log, logging.DEBUG) as logged:
            warn('a', 'first %s', 1)
            warn('a', 'again %s', 2)
            warn('b', 'other %s', 3)
            warn.reset()
            warn('a', 'after reset %s', 4)
        self.assertEqual(
            ['WARNING:first 1', 'DEBUG:again 2', 'WARNING:other 3',
             'WARNING:after reset 4'],
            [f'{record.levelname}:{record.getMessage()}'
             for record in logged.records])


class ContextTest(unittest.TestCase):

    def fields(self, made):
        return (made.worker, made.tick, made.job_id, made.job_name)

    def test_a_record_outside_a_loop_names_nothing(self):
        self.assertEqual(('-', '-', '-', '-'), self.fields(record()))

    def test_a_record_in_a_loop_and_a_job_names_them(self):
        job = Job('abc', 'module:function')
        with loop_context(Loop()):
            self.assertEqual(('worker', 3, '-', '-'), self.fields(record()))
            with job_context(job):
                self.assertEqual(('worker', 3, 'abc', 'module:function'),
                                 self.fields(record()))
            self.assertEqual(('worker', 3, '-', '-'), self.fields(record()))
        self.assertEqual(('-', '-', '-', '-'), self.fields(record()))

    def test_a_loop_before_its_first_tick_has_no_tick(self):
        loop = Loop()
        loop.tick_count = 0
        with loop_context(loop):
            self.assertEqual(('worker', '-', '-', '-'), self.fields(record()))

    def test_each_thread_has_its_own_context(self):
        seen = []
        with loop_context(Loop()):
            thread = threading.Thread(
                target=lambda: seen.append(self.fields(record())))
            thread.start()
            thread.join()
        self.assertEqual([('-', '-', '-', '-')], seen)

    def test_the_plain_format_can_name_them(self):
        formatter = logging.Formatter('%(worker)s %(tick)s %(message)s')
        with loop_context(Loop()):
            self.assertEqual('worker 3 message one',
                             formatter.format(record()))


class JSONFormatterTest(unittest.TestCase):

    def format(self, made):
        line = JSONFormatter().format(made)
        self.assertNotIn('\n', line)
        return json.loads(line)

    def test_a_record_is_one_object(self):
        with loop_context(Loop()), job_context(Job('abc', 'm:f')):
            made = record()
        made.created = 0.25
        self.assertEqual(
            {'time': '1970-01-01T00:00:00.250+00:00', 'level': 'INFO',
             'logger': 'gocept.runner.tests.test_logging',
             'message': 'message one', 'worker': 'worker', 'tick': 3,
             'job_id': 'abc', 'job_name': 'm:f'},
            self.format(made))

    def test_outside_a_loop_the_fields_are_null(self):
        line = self.format(record())
        self.assertEqual([None] * 4, [line['worker'], line['tick'],
                                      line['job_id'], line['job_name']])
        self.assertNotIn('exception', line)

    def test_an_exception_is_its_formatted_traceback(self):
        try:
            raise ValueError('boom')
        except ValueError as e:
            made = record(exc_info=(type(e), e, e.__traceback__))
        exception = self.format(made)['exception']
        self.assertTrue(exception.startswith('Traceback (most recent call'
                                             ' last):\n'), exception)
        self.assertTrue(exception.endswith('ValueError: boom'), exception)

    def test_what_cannot_be_serialised_is_its_repr(self):
        class Odd:
            def __repr__(self):
                return '<odd>'
        made = record()
        made.job_id = Odd()
        self.assertEqual('<odd>', self.format(made)['job_id'])

    def test_a_repr_that_fails_or_a_message_that_does_not_fit(self):
        class Bad:
            def __repr__(self):
                raise RuntimeError('no repr')

            __str__ = __repr__
        made = record('%s and %s', (1,))
        made.job_id = Bad()
        line = self.format(made)
        self.assertEqual("'%s and %s' % (1,)", line['message'])
        self.assertEqual('<unrepresentable Bad>', line['job_id'])
        self.assertEqual('<unrepresentable Bad> % ()',
                         self.format(record(Bad(), ()))['message'])


class LogFileTest(unittest.TestCase):
    """A job worker process logs into files of zope.conf's <logfile>s: one
    with JSONFormatter, one with the context fields in its format."""

    layer = testing.SubprocessLayer

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='gocept.runner.logging.')
        self.addCleanup(shutil.rmtree, self.dir)

    def test_json_lines_parse_and_name_the_job(self):
        json_log = os.path.join(self.dir, 'json.log')
        plain_log = os.path.join(self.dir, 'plain.log')
        testing.write_zope_conf(
            self.dir, site_zcml=programs.MINIMAL_ZCML,
            log=f'''<eventlog>
  level INFO
  <logfile>
    path {json_log}
    formatter gocept.runner.logging.JSONFormatter
  </logfile>
  <logfile>
    path {plain_log}
    arbitrary-fields true
    format %(worker)s %(tick)s %(job_name)s %(job_id)s %(message)s
  </logfile>
</eventlog>
<product-config gocept.runner.jobs>
  modules {sentryprograms.MODULE}
</product-config>
''')
        with jobprograms.client(
                f'<zodb>\n  <filestorage>\n    path {self.dir}/Data.fs\n'
                '  </filestorage>\n</zodb>\n') as client:
            client.jobs()
            job_id = sentryprograms.broken.delay('j')
            transaction.commit()
        worker = jobprograms.start(self.dir, burst=1)
        self.addCleanup(lambda: worker.poll() is None and worker.kill())
        self.assertEqual(0, worker.wait(60), jobprograms.output(self.dir))
        with open(json_log) as f:
            lines = [json.loads(line) for line in f]
        name = f'{sentryprograms.MODULE}:broken'
        runs = [line for line in lines if line['message'] == 'job j runs']
        self.assertEqual(2, len(runs), lines)  # retries=1
        for line in runs:
            self.assertEqual(
                ('INFO', sentryprograms.MODULE, 'work', job_id, name),
                (line['level'], line['logger'], line['worker'],
                 line['job_id'], line['job_name']))
            self.assertIsInstance(line['tick'], int)
        [failed] = [line for line in lines if line['level'] == 'ERROR']
        self.assertEqual((job_id, name),
                         (failed['job_id'], failed['job_name']))
        self.assertIn('failed for good', failed['message'])
        with open(plain_log) as f:
            plain = f.read().splitlines()
        self.assertIn(f'work 1 {name} {job_id} job j runs', plain)
