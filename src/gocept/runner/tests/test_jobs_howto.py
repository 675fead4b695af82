"""docs/howto/jobs.rst, run as written there: its shell sessions (a
doctest page), its systemd unit (``systemd-analyze verify``, and its
``ExecStart`` run with a ``NOTIFY_SOCKET`` of the test's own, its metrics
scraped), and its Prometheus configuration and alert rules with their
tests (promtool; skipped where it is missing, but not in CI).

``/srv/myapp`` becomes a temporary directory with ``bin/gocept-jobs``,
``zope.conf`` and the job functions of tests/jobprograms.py.
"""

import configparser
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import transaction

from gocept.runner import testing
from gocept.runner.tests import jobprograms
from gocept.runner.tests.console import code_blocks
from gocept.runner.tests.docpage import DocPageSuite
from gocept.runner.tests.test_cli import WRAPPER
from gocept.runner.tests.test_deployment import howto
from gocept.runner.tests.test_jobs_metrics import MARK
from gocept.runner.tests.test_jobs_metrics import PRODUCT_CONFIG
from gocept.runner.tests.test_metrics import scrape
from gocept.runner.tests.test_metrics import value
from gocept.runner.tests.test_metrics_docs import find


PREFIX = '/srv/myapp'
PAGE = howto('jobs')


def blocks(language):
    """The text of the page's code blocks in `language`."""
    return [block.text for block in code_blocks(PAGE)
            if block.language == language]


def yaml_blocks():
    """The YAML blocks of the page by the file name of their first line
    (``# NAME``)."""
    return {text.splitlines()[0].removeprefix('# '): text
            for text in blocks('yaml')}


class SystemdTest(unittest.TestCase):

    layer = testing.DocsLayer

    def setUp(self):
        if not os.path.exists(PAGE):
            self.skipTest('docs/ is not beside the package (no checkout)')
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        os.mkdir(os.path.join(self.dir, 'bin'))
        jobprograms.write_zope_conf(self.dir, extra=PRODUCT_CONFIG)
        script = os.path.join(self.dir, 'bin', 'gocept-jobs')
        with open(script, 'w') as f:
            f.write(WRAPPER.format(python=sys.executable,
                                   module='gocept.runner.jobs.command',
                                   name='script'))
        os.chmod(script, 0o755)
        [self.text] = blocks('ini')
        self.port = testing.free_port()
        self.text = self.text.replace(PREFIX, self.dir).replace(
            '--metrics 9102', f'--metrics {self.port}')
        unit = configparser.ConfigParser(interpolation=None)
        unit.optionxform = str
        unit.read_string(self.text)
        self.service = unit['Service']

    def exec_start(self, *args, env=None):
        """Start the unit's ExecStart (with `args`) as systemd does."""
        process = subprocess.Popen(
            [*shlex.split(self.service['ExecStart']), *args],
            cwd=self.service['WorkingDirectory'],
            env=dict(os.environ, **(env or {})), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        self.addCleanup(process.stdout.close)
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        return process

    def test_the_unit(self):
        self.assertEqual('notify', self.service['Type'])
        self.assertEqual('SIGTERM', self.service['KillSignal'])
        self.assertEqual('on-failure', self.service['Restart'])
        self.assertEqual('75', self.service['SuccessExitStatus'])
        self.assertEqual('75', self.service['RestartForceExitStatus'])
        self.assertEqual('2', self.service['RestartPreventExitStatus'])
        self.assertNotIn('WatchdogSec', self.service)
        self.assertEqual(
            f'{self.dir}/bin/gocept-jobs work -C {self.dir}/zope.conf'
            f' --workers 4 --max-memory 2G --metrics {self.port}',
            self.service['ExecStart'])

    def test_systemd_analyze_verify(self):
        if shutil.which('systemd-analyze') is None:
            self.skipTest('systemd-analyze is not installed')
        path = os.path.join(self.dir, 'myapp-jobs.service')
        with open(path, 'w') as f:
            f.write(self.text)
        result = subprocess.run(
            ['systemd-analyze', 'verify', path], capture_output=True,
            text=True, timeout=60)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual('', result.stderr)

    def test_ExecStart_runs_the_workers_and_notifies_systemd(self):
        with jobprograms.client(self.zodb_section()) as client:
            for counter in client.counters(5):
                jobprograms.mark.delay(counter)
            transaction.commit()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(os.path.join(self.dir, 'notify'))
        sock.settimeout(60)
        process = self.exec_start(
            env={'NOTIFY_SOCKET': os.path.join(self.dir, 'notify')})
        self.assertEqual('READY=1', sock.recv(4096).decode().splitlines()[0])
        # The jobs are done, and the alerts' series are there (the queue's
        # once the heartbeat has read it: a busy machine may take a while).
        alerts = {'gocept_runner_job_failed_total',
                  'gocept_runner_job_queue_depth',
                  'gocept_runner_job_oldest_pending_age_seconds'}
        deadline = time.monotonic() + 60
        while True:
            try:
                samples = scrape(self.port)
            except OSError:
                samples = {}
            if value(samples, 'gocept_runner_job_done_total',
                     job_name=MARK) == 5 and alerts <= {
                         key[0] for key in samples}:
                break
            self.assertLess(time.monotonic(), deadline, samples)
            time.sleep(0.1)
        promtool = find('promtool')
        if promtool is not None:
            result = subprocess.run(
                [promtool, 'check', 'metrics'], input=exposition(self.port),
                capture_output=True, text=True, timeout=60)
            self.assertEqual((0, ''), (result.returncode,
                                       result.stdout + result.stderr))
        process.send_signal(getattr(signal, self.service['KillSignal']))
        states = []
        while 'STOPPING=1' not in states:
            states.extend(sock.recv(4096).decode().splitlines())
        self.assertEqual(0, process.wait(60), process.stdout.read())

    def test_the_exit_statuses_systemd_acts_on(self):
        # A limit: a fresh process (SuccessExitStatus, RestartForce...).
        process = self.exec_start('--max-runtime', '1')
        self.assertEqual(75, process.wait(60), process.stdout.read())
        # A configuration error: no restart (RestartPreventExitStatus).
        os.remove(os.path.join(self.dir, 'zope.conf'))
        process = self.exec_start()
        self.assertEqual(2, process.wait(60))
        self.assertEqual(
            f'gocept-jobs work: Configuration file not found:'
            f' {self.dir}/zope.conf\n', process.stdout.read())

    def zodb_section(self):
        return (f'<zodb>\n  <filestorage>\n    path {self.dir}/Data.fs\n'
                '  </filestorage>\n</zodb>\n')


def exposition(port):
    """The text of the metrics served on `port`."""
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics',
                                timeout=10) as response:
        return response.read().decode()


class PromtoolTest(unittest.TestCase):

    layer = testing.JobsLayer

    def setUp(self):
        if not os.path.exists(PAGE):
            self.skipTest('docs/ is not beside the package (no checkout)')
        self.promtool_path = find('promtool')
        if self.promtool_path is None:
            self.skipTest('promtool is missing (apt-get install prometheus)')
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        for name, text in yaml_blocks().items():
            with open(os.path.join(self.dir, name), 'w') as f:
                f.write(text)

    def promtool(self, *args):
        return subprocess.run(
            [self.promtool_path, *args], cwd=self.dir, capture_output=True,
            text=True, timeout=60)

    def test_the_blocks(self):
        self.assertEqual(
            ['gocept-jobs.rules.test.yml', 'gocept-jobs.rules.yml',
             'prometheus.yml'], sorted(yaml_blocks()))

    def test_the_configuration_the_rules_and_their_tests(self):
        for args, expected in [
                (('check', 'config', 'prometheus.yml'),
                 'SUCCESS: 3 rules found'),
                (('check', 'rules', 'gocept-jobs.rules.yml'),
                 'SUCCESS: 3 rules found'),
                (('test', 'rules', 'gocept-jobs.rules.test.yml'),
                 'SUCCESS')]:
            result = self.promtool(*args)
            self.assertEqual(0, result.returncode,
                             result.stdout + result.stderr)
            self.assertIn(expected, result.stdout + result.stderr)

    def test_the_rule_tests_fail_when_the_rules_do_not_fire(self):
        path = os.path.join(self.dir, 'gocept-jobs.rules.yml')
        with open(path) as f:
            rules = f.read()
        for old, new, alert in [
                ('[15m])) > 0', '[15m])) > 1', 'JobsFailing'),
                ('for: 1h', 'for: 2h', 'FailedJobsKept'),
                ('> 300', '> 3000', 'JobQueueStuck')]:
            self.assertIn(old, rules)
            with open(path, 'w') as f:
                f.write(rules.replace(old, new))
            result = self.promtool('test', 'rules',
                                   'gocept-jobs.rules.test.yml')
            self.assertEqual(1, result.returncode, alert)
            self.assertIn(f'alertname: {alert}',
                          result.stdout + result.stderr)


def test_suite():
    suite = unittest.TestSuite()
    loader = unittest.defaultTestLoader
    suite.addTest(loader.loadTestsFromTestCase(SystemdTest))
    suite.addTest(loader.loadTestsFromTestCase(PromtoolTest))
    if os.path.exists(PAGE):
        page = DocPageSuite('howto/jobs.rst')
        page.layer = testing.DocsLayer
        suite.addTest(page)
    return suite
