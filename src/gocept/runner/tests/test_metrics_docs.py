"""metrics.rst's Prometheus configuration, alert rules and their tests, run
as written there with promtool and a real Prometheus server (Debian's
``prometheus`` package; skipped where it is missing, but not in CI)."""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

from gocept.runner import testing
from gocept.runner.tests import programs
from gocept.runner.tests.test_metrics import MODULE
from gocept.runner.tests.test_metrics import RunnerProcess
from gocept.runner.tests.test_metrics import read
from gocept.runner.tests.test_metrics import wait_for_scrape


DOC = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'metrics.rst')


def yaml_blocks():
    """The YAML blocks of metrics.rst by the file name of their first line
    (``# NAME``)."""
    with open(DOC) as f:
        text = f.read()
    blocks = {}
    for block in re.findall(r'\.\. code-block:: yaml\n\n((?:    .*\n|\n)+)',
                            text):
        lines = [line[4:] for line in block.splitlines()]
        name = lines[0].removeprefix('# ')
        blocks[name] = '\n'.join(lines).strip() + '\n'
    return blocks


def find(program):
    path = shutil.which(program)
    if path is None and os.environ.get('CI') == 'true':
        raise RuntimeError(f'{program} is missing, but CI needs it')
    return path


class PromtoolTests(unittest.TestCase):
    layer = testing.SubprocessLayer

    def setUp(self):
        self.promtool_path = find('promtool')
        if self.promtool_path is None:
            self.skipTest('promtool is missing (apt-get install prometheus)')
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        for name, text in yaml_blocks().items():
            with open(os.path.join(self.dir, name), 'w') as f:
                f.write(text)

    def promtool(self, *args, input=None):
        result = subprocess.run(
            [self.promtool_path, *args], cwd=self.dir, capture_output=True,
            text=True, timeout=60, input=input)
        self.assertEqual(0, result.returncode, result.stdout + result.stderr)
        return result.stdout + result.stderr

    def test_the_blocks(self):
        self.assertEqual(
            ['gocept-runner.rules.test.yml', 'gocept-runner.rules.yml',
             'prometheus.yml'], sorted(yaml_blocks()))

    def test_the_scrape_configuration(self):
        output = self.promtool('check', 'config', 'prometheus.yml')
        self.assertIn('SUCCESS: 2 rules found', output)

    def test_the_alert_rules_and_their_tests(self):
        self.assertIn('SUCCESS: 2 rules found', self.promtool(
            'check', 'rules', 'gocept-runner.rules.yml'))
        self.assertIn('SUCCESS', self.promtool(
            'test', 'rules', 'gocept-runner.rules.test.yml'))

    def test_the_rule_tests_fail_when_the_rules_do_not_fire(self):
        # The tests are not empty: with a threshold a day later they fail.
        path = os.path.join(self.dir, 'gocept-runner.rules.yml')
        with open(path) as f:
            rules = f.read()
        with open(path, 'w') as f:
            f.write(rules.replace('> 26 * 3600', '> 50 * 3600').replace(
                '[15m]', '[45m]'))
        result = subprocess.run(
            [self.promtool_path, 'test', 'rules',
             'gocept-runner.rules.test.yml'],
            cwd=self.dir, capture_output=True, text=True, timeout=60)
        self.assertEqual(1, result.returncode)
        self.assertIn('alertname: RunnerNotCommitting', result.stdout +
                      result.stderr)
        self.assertIn('alertname: JobNotSucceeding', result.stdout +
                      result.stderr)

    def test_the_job_alert_fires_for_a_batch_whose_items_fail(self):
        # The nightly batch succeeded 25 hours ago: the file of that run
        # gives its last success (the one line this run reads of it).
        # Tonight every item fails.
        worker = f'{MODULE}.batch'
        path = os.path.join(self.dir, 'nightly.prom')
        success = time.time() - 25 * 3600
        with open(path, 'w') as f:
            f.write(f'gocept_runner_last_success_timestamp_seconds'
                    f'{{worker="{worker}"}} {success!r}\n')
        result = RunnerProcess(self.dir).run(
            'batch', '--once', '--metrics-file', path,
            env={'JOB_FAILS': 'yes'})
        self.assertEqual(1, result.returncode, result.stdout)
        samples = read(path)
        # promtool's clock starts at Unix time 0, in steps of a minute: the
        # file's times are moved by `offset`, so that the run ended in
        # minute 60.  node_exporter gives the file from the next minute on,
        # labelled with its target.
        ended = samples['gocept_runner_last_run_timestamp_seconds',
                        (('worker', worker),)]
        offset = (math.floor(ended / 60) - 60) * 60
        series = []
        for (name, labels), number in sorted(samples.items()):
            if name.endswith(('_timestamp_seconds', '_start_time_seconds')):
                number -= offset
            labels = dict(labels, job='node',
                          instance='app1.example.com:9101')
            series.append({
                'series': name + '{' + ','.join(
                    f'{key}="{label}"' for key, label in labels.items())
                + '}',
                'values': f'_x61 {number:f}x180'})
        # 26 hours after the last success, in minutes of promtool's clock.
        due = (success + 26 * 3600 - offset) / 60
        summary = (f'{worker} on app1.example.com:9101 has not succeeded'
                   ' for 26 hours')
        test = {
            'rule_files': ['gocept-runner.rules.yml'],
            'evaluation_interval': '1m',
            'tests': [{
                'interval': '1m',
                'input_series': series,
                'alert_rule_test': [
                    {'eval_time': f'{math.floor(due) - 1}m',
                     'alertname': 'JobNotSucceeding', 'exp_alerts': []},
                    {'eval_time': f'{math.ceil(due) + 1}m',
                     'alertname': 'JobNotSucceeding',
                     'exp_alerts': [{
                         'exp_labels': {
                             'severity': 'warning', 'job': 'node',
                             'instance': 'app1.example.com:9101',
                             'worker': worker},
                         'exp_annotations': {'summary': summary}}]},
                ]}]}
        # JSON is YAML.
        with open(os.path.join(self.dir, 'batch.test.yml'), 'w') as f:
            json.dump(test, f, indent=2)
        self.assertIn('SUCCESS', self.promtool(
            'test', 'rules', 'batch.test.yml'))

    def test_what_a_runner_exposes_and_writes(self):
        runner = RunnerProcess(self.dir)
        port = testing.free_port()
        process = runner.start('mixed', '--ticks', '0.01', '--metrics',
                               str(port))
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        programs.wait_for(self.dir, 'done')
        wait_for_scrape(port, runner)
        with urllib.request.urlopen(
                f'http://127.0.0.1:{port}/metrics', timeout=10) as response:
            exposition = response.read().decode()
        process.send_signal(signal.SIGTERM)
        self.assertEqual(0, process.wait(30))
        self.assertEqual('', self.promtool('check', 'metrics',
                                           input=exposition))
        path = os.path.join(self.dir, 'job.prom')
        runner.run('items', '--once', '--metrics-file', path)
        with open(path) as f:
            self.assertEqual('', self.promtool('check', 'metrics',
                                               input=f.read()))


class PrometheusTests(unittest.TestCase):
    """A real Prometheus server with metrics.rst's configuration scrapes a
    running runner on 127.0.0.1."""

    layer = testing.SubprocessLayer

    def setUp(self):
        self.prometheus = find('prometheus')
        if self.prometheus is None:
            self.skipTest('prometheus is missing (apt-get install'
                          ' prometheus)')
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def test_prometheus_scrapes_the_committed_ticks(self):
        runner = RunnerProcess(self.dir)
        port = testing.free_port()
        process = runner.start('success', '--ticks', '0.05', '--metrics',
                               str(port))
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        blocks = yaml_blocks()
        config = blocks['prometheus.yml'].replace(
            'app1.example.com:9100', f'127.0.0.1:{port}').replace(
            '              - app2.example.com:9100\n', '').replace(
            'scrape_interval: 15s', 'scrape_interval: 1s')
        self.assertIn(f'127.0.0.1:{port}', config)
        for name in 'prometheus.yml', 'gocept-runner.rules.yml':
            with open(os.path.join(self.dir, name), 'w') as f:
                f.write(config if name == 'prometheus.yml' else blocks[name])
        web = testing.free_port()
        with open(os.path.join(self.dir, 'prometheus.log'), 'wb') as log:
            server = subprocess.Popen(
                [self.prometheus, '--config.file=prometheus.yml',
                 f'--storage.tsdb.path={self.dir}/data',
                 f'--web.listen-address=127.0.0.1:{web}'],
                cwd=self.dir, stdout=log, stderr=log)
        self.addCleanup(server.wait)
        self.addCleanup(server.terminate)
        query = urllib.parse.urlencode({
            'query': 'gocept_runner_ticks_total'
                     '{job="runners",outcome="committed"}'})
        deadline = time.monotonic() + 60
        while True:
            result = self.query(web, query)
            if result:
                break
            if time.monotonic() > deadline:
                with open(os.path.join(self.dir, 'prometheus.log')) as f:
                    raise AssertionError(f.read()[-3000:])
            time.sleep(0.2)
        [series] = result
        self.assertEqual(f'{MODULE}.success', series['metric']['worker'])
        self.assertEqual(f'127.0.0.1:{port}', series['metric']['instance'])
        self.assertGreater(float(series['value'][1]), 0)
        process.send_signal(signal.SIGTERM)
        self.assertEqual(0, process.wait(30))

    def query(self, port, query):
        try:
            with urllib.request.urlopen(
                    f'http://127.0.0.1:{port}/api/v1/query?{query}',
                    timeout=10) as response:
                answer = json.load(response)
        except OSError:
            return None  # not ready yet
        return answer['data']['result']
