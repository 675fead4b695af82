"""Reporting to Sentry (gocept.runner.sentry): real runner and job worker
processes report to a Sentry of the test's own on 127.0.0.1
(testing.SentryServer), which the DSN points at."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import transaction

from gocept.runner import config
from gocept.runner import sentry
from gocept.runner import testing
from gocept.runner.interfaces import ConfigurationError
from gocept.runner.tests import jobprograms
from gocept.runner.tests import programs
from gocept.runner.tests import sentryprograms
from gocept.runner.tests.docpage import DocPageSuite
from gocept.runner.tests.test_deployment import howto


TIMEOUT = 60
WORKER = 'gocept.runner.worker'
PREFIX = 'gocept.runner.'


def tags(event):
    """The tags of gocept.runner of `event`, without their prefix."""
    return {name[len(PREFIX):]: value
            for name, value in event.get('tags', {}).items()
            if name.startswith(PREFIX)}


def exception(event):
    """The type and value of the exception of `event`."""
    value = event['exception']['values'][-1]
    return value['type'], value['value']


class SettingsTest(unittest.TestCase):
    """<sentry> in zope.conf, and the monitor slugs."""

    def load(self, section):
        directory = tempfile.mkdtemp(prefix='gocept.runner.sentry.')
        self.addCleanup(shutil.rmtree, directory)
        conf = config.load(testing.write_zope_conf(directory, extra=section))
        self.addCleanup(config.configure_sentry, None)
        config.configure_sentry(conf)
        return config.sentry()

    def test_the_settings_it_gives(self):
        self.assertEqual(
            {'dsn': 'http://k@127.0.0.1:9/1', 'sample_rate': 0.5,
             'monitors': {'a.b:c': 'nightly'}},
            self.load('<sentry>\n  dsn http://k@127.0.0.1:9/1\n'
                      '  sample-rate 0.5\n  monitor a.b:c nightly\n'
                      '</sentry>\n'))
        self.assertEqual('http://k@127.0.0.1:9/1', config.sentry_dsn())

    def test_without_a_section_the_environment_names_the_dsn(self):
        self.assertEqual({}, self.load(''))
        os.environ['SENTRY_DSN'] = 'http://k@127.0.0.1:9/2'
        self.addCleanup(os.environ.pop, 'SENTRY_DSN')
        self.assertEqual('http://k@127.0.0.1:9/2', config.sentry_dsn())

    def test_a_sample_rate_outside_0_to_1(self):
        with self.assertRaises(ConfigurationError) as raised:
            self.load('<sentry>\n  sample-rate 1.5\n</sentry>\n')
        self.assertEqual('<sentry>: sample-rate must be from 0 to 1, not'
                         ' 1.5', str(raised.exception))

    def test_a_monitor_line_of_one_word(self):
        with self.assertRaises(ConfigurationError) as raised:
            self.load('<sentry>\n  monitor a.b\n</sentry>\n')
        self.assertEqual("<sentry>: monitor takes a dotted name and a slug,"
                         " not 'a.b'", str(raised.exception))

    def test_slugs(self):
        self.assertEqual('myapp-reports-nightly',
                         sentry.slug('myapp.reports:nightly'))
        self.assertEqual('n', sentry.slug('a.b', {'a.b': 'n'}))


class SentryTest(unittest.TestCase):

    layer = testing.SubprocessLayer

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='gocept.runner.sentry.')
        self.addCleanup(shutil.rmtree, self.dir)
        self.sentry = testing.SentryServer().start()
        self.addCleanup(self.sentry.stop)

    def output(self):
        return jobprograms.output(self.dir)

    def run_program(self, *args, dsn=None, command=False):
        """Run a program of sentryprograms (`command`: as the worker of
        gocept-runner) with SENTRY_DSN set to `dsn` (the test's Sentry by
        default); return its exit status."""
        if command:
            args = ['-m', 'gocept.runner', '-C',
                    os.path.join(self.dir, 'zope.conf'),
                    f'{sentryprograms.MODULE}:{args[0]}', *args[1:]]
        else:
            args = ['-m', sentryprograms.MODULE, args[0], '-C',
                    os.path.join(self.dir, 'zope.conf'), *args[1:]]
        env = dict(os.environ, SENTRY_DSN=dsn or self.sentry.dsn)
        with open(os.path.join(self.dir, 'output'), 'ab') as output:
            return subprocess.run(
                [sys.executable, *args], stdout=output, stderr=output,
                env=env, timeout=TIMEOUT).returncode


class RunnerTest(SentryTest):
    """Runners: failed ticks and once runs."""

    def setUp(self):
        super().setUp()
        testing.write_zope_conf(
            self.dir, log=programs.LOG.format(level='DEBUG', log='STDOUT'))

    def test_a_failed_tick_is_one_event_and_a_retried_conflict_none(self):
        # fail_once: tick 1 fails, tick 2 has a conflict tried again, tick
        # 3 ends the loop.
        self.assertEqual(0, self.run_program('fail_once'), self.output())
        self.assertIn('Tick 2 of worker fail_once: committed after 1'
                      ' conflicts', self.output())
        [event] = self.sentry.events()
        self.assertEqual(('ValueError', 'the first tick fails'),
                         exception(event))
        self.assertEqual({'worker': 'fail_once', 'tick': '1',
                          'principal': 'zope.mgr', 'site': '/'},
                         {k: str(v) for k, v in tags(event).items()})
        self.assertEqual([], self.sentry.check_ins())  # not a once run

    def test_a_once_run_that_succeeds_checks_in_in_progress_then_ok(self):
        self.assertEqual(0, self.run_program('succeed', command=True),
                         self.output())
        check_ins = self.sentry.check_ins()
        self.assertEqual(['in_progress', 'ok'],
                         [c['status'] for c in check_ins])
        slug = 'gocept-runner-tests-sentryprograms-succeed'
        self.assertEqual({slug}, {c['monitor_slug'] for c in check_ins})
        self.assertEqual(1, len({c['check_in_id'] for c in check_ins}))
        self.assertGreaterEqual(check_ins[1]['duration'], 0)
        self.assertEqual([], self.sentry.events())

    def test_a_once_run_that_fails_is_an_event_and_checks_in_error(self):
        self.assertEqual(1, self.run_program('fail', command=True),
                         self.output())
        check_ins = self.sentry.check_ins()
        self.assertEqual(['in_progress', 'error'],
                         [c['status'] for c in check_ins])
        self.assertEqual({'gocept-runner-tests-sentryprograms-fail'},
                         {c['monitor_slug'] for c in check_ins})
        # One event: the runner's own ERROR line is not a second one.
        [event] = self.sentry.events()
        self.assertEqual(('ValueError', 'the once run fails'),
                         exception(event))
        self.assertEqual('fail', tags(event)['worker'])

    def test_zope_conf_names_the_dsn_and_a_monitor_slug(self):
        with open(os.path.join(self.dir, 'zope.conf'), 'a') as f:
            f.write(f'<sentry>\n  dsn {self.sentry.dsn}\n'
                    '  environment staging\n  release 1.2\n'
                    f'  monitor {sentryprograms.MODULE}.succeed nightly\n'
                    '</sentry>\n')
        # zope.conf wins over the environment.
        closed = f'http://key@127.0.0.1:{testing.free_port()}/1'
        self.assertEqual(0, self.run_program('succeed', dsn=closed),
                         self.output())
        check_ins = self.sentry.check_ins()
        self.assertEqual(['nightly', 'nightly'],
                         [c['monitor_slug'] for c in check_ins])
        self.assertEqual({('staging', '1.2')},
                         {(c['environment'], c['release'])
                          for c in check_ins})

    def test_without_a_dsn_nothing_is_reported(self):
        env = {name: value for name, value in os.environ.items()
               if name != 'SENTRY_DSN'}
        with open(os.path.join(self.dir, 'output'), 'ab') as output:
            status = subprocess.run(
                [sys.executable, '-c',
                 f'import sys; from {sentryprograms.MODULE} import fail;'
                 f' fail(None, {os.path.join(self.dir, "zope.conf")!r});'
                 ' print("sentry_sdk" in sys.modules)'],
                stdout=output, stderr=output, env=env,
                timeout=TIMEOUT).returncode
        self.assertEqual(0, status, self.output())
        self.assertTrue(self.output().rstrip().endswith('False'),
                        self.output())
        self.assertEqual([], self.sentry.items())

    def test_a_sentry_that_does_not_answer_changes_no_outcome(self):
        closed = f'http://key@127.0.0.1:{testing.free_port()}/1'
        self.assertEqual(1, self.run_program('fail', dsn=closed,
                                             command=True))
        self.assertEqual(0, self.run_program('succeed', dsn=closed,
                                             command=True))
        output = self.output()
        # One WARNING for each run, none else but the failed tick's ERROR.
        warnings = [line for line in output.splitlines()
                    if line.startswith(('WARNING', 'ERROR', 'CRITICAL'))]
        self.assertEqual(
            ['ERROR gocept.runner.runner Error in worker fail, transaction'
             ' aborted', 'WARNING gocept.runner.sentry Sentry: cannot send',
             'WARNING gocept.runner.sentry Sentry: cannot send'],
            [line[:line.index(' (')] if '(' in line else line
             for line in warnings], output)


class JobTest(SentryTest):
    """Job workers: failed attempts and scheduled jobs."""

    def setUp(self):
        super().setUp()
        self.server = testing.ZEOServer(self.dir)
        self.server.start()
        self.addCleanup(self.server.stop)
        self.zodb = self.server.zodb_section()

    def work(self):
        """Run ``gocept-jobs work --burst`` until no job is left; return
        its exit status."""
        with open(os.path.join(self.dir, 'output'), 'ab') as output:
            return subprocess.run(
                [sys.executable, '-m', 'gocept.runner.jobs', 'work', '-C',
                 os.path.join(self.dir, 'zope.conf'), '--burst'],
                stdout=output, stderr=output, timeout=TIMEOUT,
                env=dict(os.environ, SENTRY_DSN=self.sentry.dsn)).returncode

    def test_each_failed_attempt_is_one_event_a_retried_conflict_none(self):
        jobprograms.write_zope_conf(
            self.dir, self.zodb,
            extra=f'<product-config gocept.runner.jobs>\n'
                  f'  modules {sentryprograms.MODULE}\n'
                  '</product-config>\n')
        with jobprograms.client(self.zodb) as client:
            [counter] = client.counters(1)
            broken = sentryprograms.broken.delay('b')
            sentryprograms.conflicted.delay(counter)
            transaction.commit()
        self.assertEqual(0, self.work(), self.output())
        with jobprograms.client(self.zodb) as client:
            [counter] = client.counters_of()
            self.assertEqual(1, counter.count)  # conflicted is done
        events = self.sentry.wait_for(
            lambda: len(self.sentry.events()) >= 2 and self.sentry.events())
        self.assertEqual(2, len(events), events)  # retries=1: 2 attempts
        name = f'{sentryprograms.MODULE}:broken'
        self.assertEqual(
            [{'job_name': name, 'job_id': broken, 'attempt': '1',
              'worker': 'work', 'principal': '-', 'site': '/'},
             {'job_name': name, 'job_id': broken, 'attempt': '2',
              'worker': 'work', 'principal': '-', 'site': '/'}],
            [{k: str(v) for k, v in tags(event).items() if k != 'tick'}
             for event in events])
        self.assertEqual({('ValueError', 'the job fails: b')},
                         {exception(event) for event in events})
        self.assertEqual([], self.sentry.check_ins())  # not scheduled

    def test_the_attempts_of_scheduled_jobs_check_in(self):
        jobprograms.write_zope_conf(
            self.dir, self.zodb,
            extra='<schedules>\n'
                  '  gocept.runner.tests.schedulejobs.every_second\n'
                  '</schedules>\n')
        worker = jobprograms.start(
            self.dir, env={'SENTRY_DSN': self.sentry.dsn})
        self.addCleanup(lambda: worker.poll() is None and worker.kill())
        self.sentry.wait_for(lambda: len(self.sentry.check_ins()) >= 4)
        worker.terminate()
        self.assertEqual(0, worker.wait(TIMEOUT), self.output())
        check_ins = self.sentry.check_ins()
        self.assertEqual(
            {'gocept-runner-tests-schedulejobs-every_second'},
            {c['monitor_slug'] for c in check_ins})
        self.assertEqual(['in_progress', 'ok', 'in_progress', 'ok'],
                         [c['status'] for c in check_ins[:4]])
        self.assertEqual(check_ins[0]['check_in_id'],
                         check_ins[1]['check_in_id'])


def test_suite():
    suite = unittest.TestSuite()
    loader = unittest.defaultTestLoader
    suite.addTest(loader.loadTestsFromTestCase(SettingsTest))
    suite.addTest(loader.loadTestsFromTestCase(RunnerTest))
    suite.addTest(loader.loadTestsFromTestCase(JobTest))
    if os.path.exists(howto('sentry')):
        # docs/howto/sentry.rst, run as written.
        page = DocPageSuite('howto/sentry.rst')
        page.layer = testing.DocsLayer
        suite.addTest(page)
    return suite
