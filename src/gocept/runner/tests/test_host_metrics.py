"""Prometheus metrics of several workers in one process (gocept.runner.host),
read from real processes with prometheus_client's own parser."""

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import prometheus_client
import prometheus_client.parser

import gocept.runner
from gocept.runner import host
from gocept.runner import retry
from gocept.runner import testing
from gocept.runner.config import ConfigurationError
from gocept.runner.tests import programs
from gocept.runner.tests.test_host import HostTest
from gocept.runner.tests.test_host import counter
from gocept.runner.tests.test_metrics import MODULE
from gocept.runner.tests.test_metrics import PROG
from gocept.runner.tests.test_metrics import RunnerProcess
from gocept.runner.tests.test_metrics import TestCase
from gocept.runner.tests.test_metrics import read
from gocept.runner.tests.test_metrics import scrape
from gocept.runner.tests.test_metrics import value
from gocept.runner.tests.test_metrics import wait_for_scrape
from gocept.runner.tests.test_metrics import without_prometheus_client


MIXED = f'{MODULE}.mixed'
STEADY = f'{MODULE}.steady'
JOB = f'{MODULE}.job'


def tally():
    """Count a tick of its thread."""
    counts = counter()
    key = threading.get_ident()
    counts[key] = counts.get(key, 0) + 1


class HostProcess(RunnerProcess):
    """The gocept-runner command with several workers of metricsworkers
    (`workers`: a sequence of their names)."""

    def command(self, workers, *args):
        return [sys.executable, '-m', 'gocept.runner',
                '-C', os.path.join(self.directory, 'zope.conf'), *args,
                *(f'{MODULE}:{worker}' for worker in workers)]


def families(text):
    """The metric families of the exposition `text` by name; each must be
    there once."""
    found = {}
    for family in prometheus_client.parser.text_string_to_metric_families(
            text):
        assert family.name not in found, f'{family.name} twice'
        found[family.name] = family
    return found


def ticks(samples, worker):
    return {outcome: value(samples, 'gocept_runner_ticks_total',
                           worker=worker, outcome=outcome)
            for outcome in ('committed', 'failed', 'conflict')}


def warnings(result):
    return [line for line in result.stdout.splitlines()
            if line.startswith('WARNING')]


class ServedTests(TestCase):

    def test_every_worker_under_its_own_label_the_process_once(self):
        runner = HostProcess(self.dir)
        port = testing.free_port()
        process = runner.start(('mixed', 'steady'), '--ticks', '0.01',
                               '--metrics', str(port))
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        programs.wait_for(self.dir, 'done', timeout=60)
        programs.wait_for(self.dir, 'steady done', timeout=60)

        def all_ticks(samples):
            return [value(samples, 'gocept_runner_tick_duration_seconds_count',
                          worker=worker) for worker in (MIXED, STEADY)]
        samples = wait_for_scrape(
            port, runner, lambda samples: all_ticks(samples) == [8, 3])
        self.assertEqual({'committed': 5, 'failed': 2, 'conflict': 1},
                         ticks(samples, MIXED))
        self.assertEqual({'committed': 2, 'failed': 1, 'conflict': 0},
                         ticks(samples, STEADY))
        self.assertEqual(retry.ATTEMPTS + 1, value(
            samples, 'gocept_runner_conflicts_total', worker=MIXED))
        self.assertEqual(0, value(
            samples, 'gocept_runner_conflicts_total', worker=STEADY))
        for worker in MIXED, STEADY:
            last = value(samples,
                         'gocept_runner_last_success_timestamp_seconds',
                         worker=worker)
            self.assertLess(abs(time.time() - last), 60)
        # One family for each figure; the process's figures once.
        with urllib.request.urlopen(
                f'http://127.0.0.1:{port}/metrics', timeout=10) as response:
            found = families(response.read().decode('utf-8'))
        self.assertEqual(
            {MIXED, STEADY},
            {sample.labels['worker']
             for sample in found['gocept_runner_ticks'].samples})
        self.assertEqual(
            {MIXED: ('4.0.dev0', 1), STEADY: ('4.0.dev0', 1)},
            {sample.labels['worker']: (sample.labels['version'], sample.value)
             for sample in found['gocept_runner_info'].samples})
        start = found['gocept_runner_process_start_time_seconds'].samples
        self.assertEqual(1, len(start))
        self.assertEqual({}, start[0].labels)
        self.assertLess(abs(time.time() - start[0].value), 60)
        self.stop(process)
        # The server has ended with the host.
        with self.assertRaises(OSError):
            scrape(port)


class TextfileTests(TestCase):

    def setUp(self):
        super().setUp()
        self.runner = HostProcess(self.dir)
        self.path = os.path.join(self.dir, 'metrics', 'host.prom')
        os.mkdir(os.path.dirname(self.path))

    def run_host(self, *workers, env=None):
        return self.runner.run(workers, '--once', '--metrics-file',
                               self.path, env=env)

    def read(self):
        with open(self.path, encoding='utf-8') as f:
            text = f.read()
        found = families(text)
        return {(sample.name, tuple(sorted(sample.labels.items()))):
                sample.value
                for family in found.values() for sample in family.samples}

    def test_each_worker_keeps_its_own_last_success(self):
        started = time.time()
        result = self.run_host('job', 'steady')
        self.assertEqual(0, result.returncode, result.stdout)
        first = self.read()
        success = {}
        for worker in JOB, STEADY:
            self.assertEqual(1, value(
                first, 'gocept_runner_last_run_success', worker=worker))
            self.assertEqual(1, value(first, 'gocept_runner_ticks_total',
                                      worker=worker, outcome='committed'))
            success[worker] = value(
                first, 'gocept_runner_last_success_timestamp_seconds',
                worker=worker)
            self.assertLessEqual(started, success[worker])
            self.assertLessEqual(success[worker], value(
                first, 'gocept_runner_last_run_timestamp_seconds',
                worker=worker))
            self.assertLess(0, value(
                first, 'gocept_runner_last_run_duration_seconds',
                worker=worker))
        self.assertEqual(1, len([
            key for key in first
            if key[0] == 'gocept_runner_process_start_time_seconds']))

        # The job fails, the other worker succeeds again.
        time.sleep(0.01)
        result = self.run_host('job', 'steady', env={'JOB_FAILS': 'yes'})
        self.assertEqual(1, result.returncode, result.stdout)
        second = self.read()
        self.assertEqual(0, value(second, 'gocept_runner_last_run_success',
                                  worker=JOB))
        self.assertEqual(1, value(second, 'gocept_runner_ticks_total',
                                  worker=JOB, outcome='failed'))
        self.assertEqual(success[JOB], value(
            second, 'gocept_runner_last_success_timestamp_seconds',
            worker=JOB))
        self.assertEqual(1, value(second, 'gocept_runner_last_run_success',
                                  worker=STEADY))
        self.assertLess(success[STEADY], value(
            second, 'gocept_runner_last_success_timestamp_seconds',
            worker=STEADY))
        # No temporary file is left beside it.
        self.assertEqual(['host.prom'],
                         os.listdir(os.path.dirname(self.path)))

    def test_a_taken_port_and_a_missing_directory_are_warnings(self):
        path = os.path.join(self.dir, 'missing', 'host.prom')
        with socket.socket() as taken:
            taken.bind(('127.0.0.1', 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = self.runner.run(
                ('success', 'steady'), '--once', '--metrics', str(port),
                '--metrics-file', path)
        self.assertEqual(0, result.returncode, result.stdout)
        self.assertEqual(['succeeded'], programs.read_report(self.dir))
        self.assertEqual(
            [f'WARNING gocept.runner.metrics Cannot serve metrics on'
             f' 127.0.0.1:{port}: Address already in use',
             f'WARNING gocept.runner.metrics Cannot write the metrics file'
             f' {path}: No such file or directory'], warnings(result))
        self.assertFalse(os.path.exists(os.path.dirname(path)))


class ExtraTests(TestCase):

    def test_without_the_extra_asking_for_metrics_is_one_line(self):
        runner = HostProcess(self.dir)
        env = dict(runner.env, PYTHONPATH=without_prometheus_client(self.dir))
        for option in ('--metrics=9100', f'--metrics-file={self.dir}/x.prom'):
            result = subprocess.run(
                [sys.executable, '-S', *runner.command(
                    ('success', 'steady'), '--once', option)[1:]],
                env=env, capture_output=True, text=True, timeout=60)
            self.assertEqual(2, result.returncode, result.stderr)
            self.assertEqual(
                f'{PROG}: Metrics need the metrics extra of'
                ' gocept.runner (prometheus_client is not installed): pip'
                ' install "gocept.runner[metrics]"\n', result.stderr)
        self.assertEqual([], programs.read_report(self.dir))
        self.assertFalse(os.path.exists(os.path.join(self.dir, 'Data.fs')))


class HostTests(HostTest):
    """The Python API: gocept.runner.host.Host's metrics."""

    def test_a_bad_address_before_anything_is_opened(self):
        def job():
            raise AssertionError('not to be called')
        with self.assertRaises(ConfigurationError) as caught:
            host.Host([job], metrics='nowhere').run('/nonexistent/zope.conf')
        self.assertEqual("'nowhere' is not an address to serve metrics on:"
                         " give [HOST:]PORT", str(caught.exception))

    def test_a_decorated_worker_counts_in_the_metrics_of_the_host(self):
        single = os.path.join(self.directory, 'single.prom')

        @gocept.runner.once(metrics_file=single)
        def job():
            pass

        def other():
            pass
        path = os.path.join(self.directory, 'host.prom')
        runner = self.run_host(job, host.Worker(other, once=True),
                               metrics_file=path)
        self.assertEqual(['once', 'once'],
                         [w.loop.stopped_because for w in runner.workers])
        samples = read(path)
        for worker in runner.workers:
            self.assertEqual(1, value(
                samples, 'gocept_runner_ticks_total',
                worker=worker.measure.worker, outcome='committed'))
        self.assertFalse(os.path.exists(single))

    def test_two_workers_of_one_name_are_a_configuration_error(self):
        def job():
            raise AssertionError('not to be called')
        for other in (host.Worker(job, ticks=5),
                      host.Worker(job, site_name='elsewhere')):
            with self.assertRaises(ConfigurationError) as caught:
                host.Host([job, other], metrics_file='host.prom')
            self.assertEqual(
                f'Two workers named {__name__}.HostTests.test_two_workers_of'
                '_one_name_are_a_configuration_error.<locals>.job: their'
                ' metrics would not be told apart', str(caught.exception))
            # Without metrics, they may.
            host.Host([job, other])

    def test_copies_of_a_worker_are_one_sample_of_its_label(self):
        # The same function with the same settings on the same site, as
        # gocept-jobs work --workers N runs: their counts are summed, the
        # last success is the latest.
        path = os.path.join(self.directory, 'host.prom')
        runner = self.run_host(
            host.Worker(tally, once=True), host.Worker(tally, once=True),
            host.Worker(tally, once=True), metrics_file=path)
        first, *copies = [worker.measure for worker in runner.workers]
        self.assertEqual(3, len({id(m) for m in [first, *copies]}))
        self.assertEqual(3, sum(self.read_counts().values()))
        samples = read(path)
        label = f'{__name__}.tally'
        self.assertEqual(3, value(samples, 'gocept_runner_ticks_total',
                                  worker=label, outcome='committed'))
        self.assertEqual(3, value(
            samples, 'gocept_runner_tick_duration_seconds_count',
            worker=label))
        self.assertEqual(
            max(m.last_success for m in runner.metrics.measures),
            value(samples, 'gocept_runner_last_success_timestamp_seconds',
                  worker=label))
        self.assertEqual(1, value(samples, 'gocept_runner_last_run_success',
                                  worker=label))
        self.assertEqual(1, len([key for key in samples
                                 if key[0] == 'gocept_runner_ticks_total' and
                                 ('outcome', 'committed') in key[1]]))

    def test_every_worker_has_a_measure_labelled_with_its_name(self):
        def first():
            pass

        @gocept.runner.once(metrics_file='/nonexistent/single.prom')
        def second():
            pass
        runner = host.Host([first, second], metrics_file='host.prom')
        name = f'{__name__}.HostTests.test_every_worker_has_a_measure' \
               '_labelled_with_its_name.<locals>.'
        self.assertEqual(
            [name + 'first', name + 'second'],
            [worker.measure.worker for worker in runner.workers])
        self.assertEqual(
            [worker.measure for worker in runner.workers],
            runner.metrics.measures)
