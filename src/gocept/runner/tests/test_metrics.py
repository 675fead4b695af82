"""Prometheus metrics of real runner processes, read with prometheus_client's
own parser."""

import logging
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import prometheus_client
import prometheus_client.parser
import transaction
import ZODB

import gocept.runner
import gocept.runner.metrics
from gocept.runner import retry
from gocept.runner import testing
from gocept.runner.config import ConfigurationError
from gocept.runner.tests import programs


MODULE = 'gocept.runner.tests.metricsworkers'
# The program's name in its messages.
PROG = 'python -m gocept.runner'


def parse(text):
    """The samples of the exposition `text`: {(name, labels): value}."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in prometheus_client.parser
            .text_string_to_metric_families(text)
            for sample in family.samples}


def scrape(port, host='127.0.0.1', names=None):
    """The samples the server on `port` gives (of the series `names`, if
    given, by Prometheus' own selection ``?name[]=NAME``)."""
    query = '' if names is None else '?' + urllib.parse.urlencode(
        [('name[]', name) for name in names])
    with urllib.request.urlopen(
            f'http://{host}:{port}/metrics{query}', timeout=10) as response:
        return parse(response.read().decode('utf-8'))


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def read(path):
    with open(path, encoding='utf-8') as f:
        return parse(f.read())


class RunnerProcess:
    """The gocept-runner command with a worker of metricsworkers, its
    zope.conf, report and output in `directory`."""

    def __init__(self, directory, storage=None):
        self.directory = directory
        programs.write_zope_conf(directory, storage)
        self.env = dict(os.environ,
                        RUNNER_TEST_REPORT=os.path.join(directory, 'report'))

    def command(self, worker, *args):
        return [sys.executable, '-m', 'gocept.runner',
                '-C', os.path.join(self.directory, 'zope.conf'), *args,
                f'{MODULE}:{worker}']

    def start(self, worker, *args):
        output = open(os.path.join(self.directory, 'output'), 'ab')
        with output:
            return subprocess.Popen(self.command(worker, *args),
                                    stdout=output, stderr=output,
                                    env=self.env)

    def run(self, worker, *args, env=None):
        return subprocess.run(self.command(worker, *args),
                              env=dict(self.env, **(env or {})),
                              capture_output=True, text=True, timeout=60)

    def output(self):
        with open(os.path.join(self.directory, 'output')) as f:
            return f.read()


def wait_for_scrape(port, runner, condition=bool, host='127.0.0.1',
                    timeout=60):
    """Scrape `port` until it answers with samples that meet `condition`;
    return them."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            samples = scrape(port, host)
        except OSError:  # not serving yet
            samples = None
        if samples is not None and condition(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f'Timed out; output:\n{runner.output()}')
        time.sleep(0.05)


class TestCase(unittest.TestCase):
    layer = testing.SubprocessLayer

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def process(self, storage=None):
        return RunnerProcess(self.dir, storage)

    def stop(self, process):
        process.send_signal(signal.SIGTERM)
        self.assertEqual(0, process.wait(30))


class ServedTests(TestCase):

    def start_mixed(self, metrics):
        """The runner and the process of the worker `mixed`, serving its
        metrics on `metrics`."""
        runner = self.process()
        process = runner.start('mixed', '--ticks', '0.01', '--metrics',
                               metrics)
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        return runner, process

    def test_the_counters_of_a_daemon_match_what_happened(self):
        port = testing.free_port()
        runner, process = self.start_mixed(str(port))
        programs.wait_for(self.dir, 'done', timeout=60)
        worker = f'{MODULE}.mixed'
        # The report is written in the last tick, before its commit.
        samples = wait_for_scrape(port, runner, lambda samples: value(
            samples, 'gocept_runner_tick_duration_seconds_count',
            worker=worker) == 8)
        ticks = {outcome: value(samples, 'gocept_runner_ticks_total',
                                worker=worker, outcome=outcome)
                 for outcome in ('committed', 'failed', 'conflict')}
        self.assertEqual({'committed': 5, 'failed': 2, 'conflict': 1}, ticks)
        self.assertEqual(
            retry.ATTEMPTS + 1,
            value(samples, 'gocept_runner_conflicts_total', worker=worker))
        last = value(samples, 'gocept_runner_last_success_timestamp_seconds',
                     worker=worker)
        self.assertLess(abs(time.time() - last), 30)
        self.assertEqual(0, value(samples, 'gocept_runner_storage_unavailable',
                                  worker=worker))
        self.assertEqual(1, value(samples, 'gocept_runner_info',
                                  worker=worker, version='4.0.dev0'))
        start = value(samples, 'gocept_runner_process_start_time_seconds')
        self.assertLess(abs(time.time() - start), 60)
        self.stop(process)
        # The server has ended with the loop.
        with self.assertRaises(OSError):
            scrape(port)

    def test_a_taken_port_is_a_warning_and_changes_nothing_else(self):
        runner = self.process()
        with socket.socket() as taken:
            taken.bind(('127.0.0.1', 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = runner.run('success', '--once', '--metrics', str(port))
        self.assertEqual(0, result.returncode, result.stdout)
        self.assertEqual(['succeeded'], programs.read_report(self.dir))
        warnings = [line for line in result.stdout.splitlines()
                    if line.startswith('WARNING')]
        self.assertEqual(
            [f'WARNING gocept.runner.metrics Cannot serve metrics on'
             f' 127.0.0.1:{port}: Address already in use'], warnings)

    def test_a_named_interface(self):
        port = testing.free_port()
        runner, process = self.start_mixed(f'localhost:{port}')
        samples = wait_for_scrape(port, runner)
        self.assertIn(('gocept_runner_ticks_total', (
            ('outcome', 'committed'), ('worker', f'{MODULE}.mixed'))),
            samples)
        self.stop(process)

    def test_an_ipv6_interface(self):
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(('::1', 0))
                port = s.getsockname()[1]
        except OSError:
            self.skipTest('no IPv6 loopback interface')
        runner, process = self.start_mixed(f'[::1]:{port}')
        wait_for_scrape(port, runner, lambda samples: value(
            samples, 'gocept_runner_ticks_total', worker=f'{MODULE}.mixed',
            outcome='committed') == 5, host='[::1]')
        # Not on IPv4's loopback interface.
        with self.assertRaises(OSError):
            scrape(port)
        self.stop(process)

    @unittest.skipUnless(sys.platform.startswith('linux'), 'Linux only')
    def test_the_server_takes_no_signal_and_leaves_the_lock(self):
        # The server's thread blocks the signals: they go to the runner's
        # thread.  The runner keeps its lock on the FileStorage.
        import zc.lockfile
        port = testing.free_port()
        runner, process = self.start_mixed(str(port))
        wait_for_scrape(port, runner)
        data_fs = os.path.join(self.dir, 'Data.fs')
        others = [task for task in os.listdir(f'/proc/{process.pid}/task')
                  if task != str(process.pid)]
        self.assertTrue(others)  # the server's thread
        for task in others:
            try:
                with open(f'/proc/{process.pid}/task/{task}/status') as f:
                    status = dict(line.split(':', 1) for line in f)
            except FileNotFoundError:  # a scrape's thread that has ended
                continue
            blocked = int(status['SigBlk'], 16)
            self.assertEqual(0, (1 << signal.SIGTERM - 1) & ~blocked)
            self.assertEqual(0, (1 << signal.SIGHUP - 1) & ~blocked)
        with self.assertRaises(zc.lockfile.LockError):
            zc.lockfile.LockFile(data_fs + '.lock')
        wait_for_scrape(port, runner)
        self.stop(process)

    def test_not_an_address_is_a_usage_error(self):
        runner = self.process()
        for address in ('x', '::1', '70000', 'host:', '[::1]', '0'):
            result = runner.run('success', '--once', '--metrics', address)
            self.assertEqual(2, result.returncode, address)
            self.assertEqual(
                f"{PROG}: argument --metrics: {address!r} is not an"
                " address to serve metrics on: give [HOST:]PORT (see"
                " --help)\n", result.stderr)
        self.assertEqual([], programs.read_report(self.dir))
        self.assertFalse(os.path.exists(os.path.join(self.dir, 'Data.fs')))

    def test_series_selected_by_name(self):
        # Prometheus' own selection, ?name[]=NAME, gives the samples of
        # that name, the process's as the worker's, and no other.
        port = testing.free_port()
        runner, process = self.start_mixed(str(port))
        programs.wait_for(self.dir, 'done', timeout=60)
        samples = wait_for_scrape(port, runner, lambda samples: value(
            samples, 'gocept_runner_tick_duration_seconds_count',
            worker=f'{MODULE}.mixed') == 8)
        names = {name for name, _ in samples}
        self.assertLessEqual(
            {'gocept_runner_ticks_total', 'gocept_runner_info',
             'gocept_runner_tick_duration_seconds_bucket',
             'gocept_runner_process_start_time_seconds'}, names)

        def series(names):
            return {key for key in samples if key[0] in names}
        for name in names:
            self.assertEqual(series({name}),
                             set(scrape(port, names=[name])), name)
        two = ['gocept_runner_items_total',
               'gocept_runner_tick_duration_seconds_sum']
        self.assertEqual(series(two), set(scrape(port, names=two)))
        self.assertEqual({}, scrape(port, names=['gocept_runner_ticks']))
        self.stop(process)

    def test_a_tick_whose_items_failed_is_no_success(self):
        runner = self.process()
        runner.env['JOB_FAILS'] = 'yes'
        port = testing.free_port()
        process = runner.start('batch', '--ticks', '0.01', '--metrics',
                               str(port))
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        worker = f'{MODULE}.batch'
        samples = wait_for_scrape(port, runner, lambda samples: (value(
            samples, 'gocept_runner_items_total', worker=worker,
            outcome='failed') or 0) >= 6)
        # Its ticks committed (there was nothing to commit but the items).
        self.assertLessEqual(2, value(samples, 'gocept_runner_ticks_total',
                                      worker=worker, outcome='committed'))
        self.assertEqual(0, value(
            samples, 'gocept_runner_last_success_timestamp_seconds',
            worker=worker))
        self.stop(process)


def threads(process):
    """How many threads `process` has (Linux)."""
    return len(os.listdir(f'/proc/{process.pid}/task'))


class ClientTests(TestCase):
    """Nothing a client of the server does is news: no line on the
    runner's output (a DEBUG line at most), and scrapes are answered."""

    def start(self):
        """The runner and the process of the worker `success`, which ticks
        once, serving its metrics (with a client timeout of half a second
        instead of ten); and the server's port."""
        runner = self.process()
        runner.env['METRICS_CLIENT_TIMEOUT'] = '0.5'
        port = testing.free_port()
        process = runner.start('success', '--ticks', '3600', '--metrics',
                               str(port))
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        wait_for_scrape(port, runner)
        return runner, process, port

    def connect(self, port):
        client = socket.create_connection(('127.0.0.1', port), timeout=30)
        self.addCleanup(client.close)
        return client

    def test_clients_that_send_nothing(self):
        # A port scanner, a load balancer's probe: each connection ends
        # by the server's timeout.
        runner, process, port = self.start()
        clients = [self.connect(port) for _ in range(200)]
        with selectors.DefaultSelector() as selector:
            for client in clients:
                selector.register(client, selectors.EVENT_READ)
            deadline = time.monotonic() + 60
            while selector.get_map():
                self.assertLess(time.monotonic(), deadline)
                for key, _ in selector.select(timeout=1):
                    # The server closed it.
                    self.assertEqual(b'', key.fileobj.recv(1))
                    selector.unregister(key.fileobj)
        self.assertEqual('', runner.output())
        wait_for_scrape(port, runner)
        self.stop(process)

    @unittest.skipUnless(sys.platform.startswith('linux'), 'Linux only')
    def test_what_clients_send_or_break(self):
        runner, process, port = self.start()
        sent = [
            b'GET /metrics HTTP/1.1\r\nHost: local',  # half a request
            b'GET /metrics HTTP/1.1\r\nHost: local\r\n',  # no end
            b'garbage\r\n\r\n',
            b'\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03',  # TLS
            b'\xff' * 70000 + b'\r\n',  # a request line too long
            # What prometheus_client cannot read.
            b'GET /metrics HTTP/1.1\r\nAccept: text/plain; version=x'
            b'\r\n\r\n',
        ]
        for request in sent:
            self.connect(port).sendall(request)
        # Connections that end with a reset: before and after the request.
        for request in (b'', b'GET /metrics HTTP/1.1\r\n\r\n'):
            client = self.connect(port)
            client.sendall(request)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                              struct.pack('ii', 1, 0))
            client.close()
        # The threads of all of them have ended: the runner's and the
        # server's are left.
        deadline = time.monotonic() + 30
        while threads(process) > 2:
            self.assertLess(time.monotonic(), deadline, runner.output())
            time.sleep(0.02)
        self.assertEqual('', runner.output())
        wait_for_scrape(port, runner)
        self.stop(process)

    def test_a_scrape_during_a_burst_of_connects(self):
        # Connects faster than the server accepts them fill a short listen
        # queue, and a scrape behind them waits a second or more for its
        # connection.  A few rounds: the server may have emptied the queue
        # of the first in time.
        runner, process, port = self.start()
        for _ in range(3):
            for _ in range(200):
                client = socket.socket()
                self.addCleanup(client.close)
                client.setblocking(False)
                client.connect_ex(('127.0.0.1', port))
            started = time.monotonic()
            scrape(port)
            self.assertLess(time.monotonic() - started, 1)
        self.stop(process)


class OutageTests(TestCase):

    def test_the_storage_unavailable_while_the_zeo_server_is_away(self):
        server = testing.ZEOServer(self.dir)
        server.start()
        self.addCleanup(server.stop)
        runner = self.process(
            f'<clientstorage>\n    server {server.address}\n'
            '    wait-timeout 1\n  </clientstorage>')
        # <clientstorage> is ZEO's own section type.
        with open(os.path.join(self.dir, 'zope.conf')) as f:
            conf = f.read()
        with open(os.path.join(self.dir, 'zope.conf'), 'w') as f:
            f.write('%import ZEO\n' + conf)
        port = testing.free_port()
        process = runner.start('success', '--ticks', '0.1', '--metrics',
                               str(port))
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        worker = f'{MODULE}.success'

        def committed(samples):
            return value(samples, 'gocept_runner_ticks_total',
                         worker=worker, outcome='committed') or 0
        wait_for_scrape(port, runner, lambda s: committed(s) >= 2)
        server.stop()
        samples = wait_for_scrape(port, runner, lambda s: value(
            s, 'gocept_runner_storage_unavailable_seconds_total',
            worker=worker) >= 1)
        self.assertEqual(1, value(samples, 'gocept_runner_storage_unavailable',
                                  worker=worker))
        self.assertGreater(value(samples, 'gocept_runner_ticks_total',
                                 worker=worker, outcome='unavailable'), 0)
        before = committed(samples)
        server.start()
        samples = wait_for_scrape(port, runner,
                                  lambda s: committed(s) > before)
        self.assertEqual(0, value(samples, 'gocept_runner_storage_unavailable',
                                  worker=worker))
        away = value(samples,
                     'gocept_runner_storage_unavailable_seconds_total',
                     worker=worker)
        self.assertGreaterEqual(away, 1)
        time.sleep(0.3)
        self.assertEqual(away, value(
            scrape(port), 'gocept_runner_storage_unavailable_seconds_total',
            worker=worker))
        self.stop(process)


class TextfileTests(TestCase):

    def setUp(self):
        super().setUp()
        self.runner = self.process()
        self.path = os.path.join(self.dir, 'metrics', 'job.prom')
        os.mkdir(os.path.dirname(self.path))

    def run_job(self, worker):
        return self.runner.run(worker, '--once', '--metrics-file', self.path)

    def test_a_failing_run_keeps_the_last_success_of_the_run_before(self):
        started = time.time()
        self.assertEqual(0, self.run_job('job').returncode)
        worker = f'{MODULE}.job'
        first = read(self.path)
        self.assertEqual(1, value(first, 'gocept_runner_last_run_success',
                                  worker=worker))
        success = value(first, 'gocept_runner_last_success_timestamp_seconds',
                        worker=worker)
        ended = value(first, 'gocept_runner_last_run_timestamp_seconds',
                      worker=worker)
        self.assertLessEqual(started, success)
        self.assertLessEqual(success, ended)
        self.assertLessEqual(ended, time.time())
        duration = value(first, 'gocept_runner_last_run_duration_seconds',
                         worker=worker)
        self.assertLess(0, duration)
        self.assertLessEqual(duration, time.time() - started)
        self.assertEqual(1, value(first, 'gocept_runner_ticks_total',
                                  worker=worker, outcome='committed'))

        # The same worker's run fails (its label is the same: the file is
        # the job's).
        shutil.copy(self.path, self.path + '.first')
        result = self.runner.run(
            'job', '--once', '--metrics-file', self.path,
            env={'JOB_FAILS': 'yes'})
        self.assertEqual(1, result.returncode, result.stdout)
        second = read(self.path)
        self.assertEqual(0, value(second, 'gocept_runner_last_run_success',
                                  worker=worker))
        self.assertEqual(success, value(
            second, 'gocept_runner_last_success_timestamp_seconds',
            worker=worker))
        self.assertLess(ended, value(
            second, 'gocept_runner_last_run_timestamp_seconds',
            worker=worker))
        self.assertEqual(1, value(second, 'gocept_runner_ticks_total',
                                  worker=worker, outcome='failed'))
        # No temporary file is left beside it.
        self.assertEqual(['job.prom', 'job.prom.first'],
                         sorted(os.listdir(os.path.dirname(self.path))))

    def test_a_job_that_never_succeeded_says_so(self):
        self.assertEqual(1, self.run_job('failure').returncode)
        samples = read(self.path)
        worker = f'{MODULE}.failure'
        self.assertEqual(0, value(samples, 'gocept_runner_last_run_success',
                                  worker=worker))
        self.assertEqual(0, value(
            samples, 'gocept_runner_last_success_timestamp_seconds',
            worker=worker))

    def test_items_of_transaction_per_item(self):
        result = self.run_job('items')
        self.assertEqual(1, result.returncode, result.stdout)
        samples = read(self.path)
        worker = f'{MODULE}.items'
        self.assertEqual(
            {'committed': 2, 'failed': 1, 'conflict': 1},
            {outcome: value(samples, 'gocept_runner_items_total',
                            worker=worker, outcome=outcome)
             for outcome in ('committed', 'failed', 'conflict')})
        self.assertEqual(retry.ATTEMPTS, value(
            samples, 'gocept_runner_conflicts_total', worker=worker))
        self.assertEqual(0, value(samples, 'gocept_runner_last_run_success',
                                  worker=worker))
        # An item failed: the run did not succeed, though others committed.
        self.assertEqual(0, value(
            samples, 'gocept_runner_last_success_timestamp_seconds',
            worker=worker))

    def test_a_batch_whose_items_all_failed_keeps_the_last_success(self):
        started = time.time()
        self.assertEqual(0, self.run_job('batch').returncode)
        worker = f'{MODULE}.batch'
        first = read(self.path)
        self.assertEqual(1, value(first, 'gocept_runner_last_run_success',
                                  worker=worker))
        success = value(first, 'gocept_runner_last_success_timestamp_seconds',
                        worker=worker)
        self.assertLessEqual(started, success)
        result = self.runner.run(
            'batch', '--once', '--metrics-file', self.path,
            env={'JOB_FAILS': 'yes'})
        self.assertEqual(1, result.returncode, result.stdout)
        second = read(self.path)
        self.assertEqual(3, value(second, 'gocept_runner_items_total',
                                  worker=worker, outcome='failed'))
        # Its tick committed: there was nothing to commit but the items.
        self.assertEqual(1, value(second, 'gocept_runner_ticks_total',
                                  worker=worker, outcome='committed'))
        self.assertEqual(0, value(second, 'gocept_runner_last_run_success',
                                  worker=worker))
        self.assertEqual(success, value(
            second, 'gocept_runner_last_success_timestamp_seconds',
            worker=worker))

    def test_a_run_that_reached_a_limit_is_no_success(self):
        # Its tick committed, but the exit status is 75: a supervisor is to
        # start the job again.
        self.assertEqual(0, self.run_job('job').returncode)
        worker = f'{MODULE}.job'
        success = value(read(self.path),
                        'gocept_runner_last_success_timestamp_seconds',
                        worker=worker)
        result = self.runner.run('job', '--once', '--max-ticks', '1',
                                 '--metrics-file', self.path)
        self.assertEqual(75, result.returncode, result.stdout)
        samples = read(self.path)
        self.assertEqual(1, value(samples, 'gocept_runner_ticks_total',
                                  worker=worker, outcome='committed'))
        self.assertEqual(0, value(samples, 'gocept_runner_last_run_success',
                                  worker=worker))
        self.assertEqual(success, value(
            samples, 'gocept_runner_last_success_timestamp_seconds',
            worker=worker))

    def test_a_doomed_run_is_a_success(self):
        # Its exit status is 0: the worker chose not to commit.
        started = time.time()
        self.assertEqual(0, self.run_job('doomed').returncode)
        samples = read(self.path)
        worker = f'{MODULE}.doomed'
        self.assertEqual(1, value(samples, 'gocept_runner_ticks_total',
                                  worker=worker, outcome='doomed'))
        self.assertEqual(1, value(samples, 'gocept_runner_last_run_success',
                                  worker=worker))
        self.assertLessEqual(started, value(
            samples, 'gocept_runner_last_success_timestamp_seconds',
            worker=worker))

    def test_a_run_that_fails_before_its_loop_writes_the_file(self):
        with open(os.path.join(self.dir, 'zope.conf'), 'a') as f:
            f.write('<zodb>\n  <filestorage>\n    path'
                    f' {self.dir}/nowhere/Data.fs\n  </filestorage>\n'
                    '</zodb>\n')
        result = self.run_job('success')
        self.assertNotEqual(0, result.returncode)
        samples = read(self.path)
        self.assertEqual(0, value(samples, 'gocept_runner_last_run_success',
                                  worker=f'{MODULE}.success'))

    def test_a_missing_directory_is_a_warning(self):
        self.path = os.path.join(self.dir, 'missing', 'job.prom')
        result = self.run_job('success')
        self.assertEqual(0, result.returncode, result.stdout)
        self.assertEqual(['succeeded'], programs.read_report(self.dir))
        self.assertEqual(
            [f'WARNING gocept.runner.metrics Cannot write the metrics file'
             f' {self.path}: No such file or directory'],
            [line for line in result.stdout.splitlines()
             if line.startswith('WARNING')])
        self.assertFalse(os.path.exists(os.path.dirname(self.path)))

    @unittest.skipIf(os.geteuid() == 0, 'root writes anywhere')
    def test_a_directory_not_writable_is_a_warning(self):
        os.chmod(os.path.dirname(self.path), 0o500)
        self.addCleanup(os.chmod, os.path.dirname(self.path), 0o700)
        result = self.run_job('failure')
        self.assertEqual(1, result.returncode, result.stdout)
        self.assertIn(
            f'WARNING gocept.runner.metrics Cannot write the metrics file'
            f' {self.path}: Permission denied', result.stdout)
        self.assertEqual([], os.listdir(os.path.dirname(self.path)))

    def test_a_previous_file_that_is_not_metrics_is_a_warning(self):
        with open(self.path, 'w') as f:
            f.write('not metrics {{{\n')
        result = self.run_job('failure')
        self.assertEqual(1, result.returncode, result.stdout)
        self.assertIn(
            f'WARNING gocept.runner.metrics Cannot read the last success from'
            f' the metrics file {self.path}: not metrics', result.stdout)
        self.assertEqual(0, value(
            read(self.path), 'gocept_runner_last_run_success',
            worker=f'{MODULE}.failure'))


def without_prometheus_client(directory):
    """A PYTHONPATH (made in `directory`) for ``python -S`` that finds all
    that the runner needs, but not prometheus_client: this process's path,
    where a folder holds prometheus_client a copy of it without (of
    symbolic links; site-packages of a virtualenv, an egg of a buildout).
    """
    # The checkout's src first: an editable install is found through
    # site-packages' .pth files, which python -S does not read.
    path = [os.path.dirname(os.path.dirname(os.path.dirname(
        gocept.runner.__file__)))]
    for number, entry in enumerate(sys.path):
        if not entry or not os.path.isdir(entry):
            continue
        names = os.listdir(entry)
        if not any(name.startswith('prometheus_client') for name in names):
            path.append(entry)
            continue
        copy = os.path.join(directory, f'path{number}')
        os.mkdir(copy)
        for name in names:
            if not name.startswith('prometheus_client'):
                os.symlink(os.path.join(entry, name),
                           os.path.join(copy, name))
        path.append(copy)
    return os.pathsep.join(path)


class ExtraTests(TestCase):

    def test_without_the_extra_asking_for_metrics_is_one_line(self):
        runner = self.process()
        env = dict(runner.env, PYTHONPATH=without_prometheus_client(self.dir))
        for option in ('--metrics=9100', f'--metrics-file={self.dir}/x.prom'):
            result = subprocess.run(
                [sys.executable, '-S', '-m', 'gocept.runner', '-C',
                 os.path.join(self.dir, 'zope.conf'), '--once', option,
                 f'{MODULE}:success'],
                env=env, capture_output=True, text=True, timeout=60)
            self.assertEqual(2, result.returncode, result.stderr)
            self.assertEqual(
                f'{PROG}: Metrics need the metrics extra of'
                ' gocept.runner (prometheus_client is not installed): pip'
                ' install "gocept.runner[metrics]"\n', result.stderr)
        self.assertEqual([], programs.read_report(self.dir))
        self.assertFalse(os.path.exists(os.path.join(self.dir, 'Data.fs')))
        # The same Python runs the job without metrics.
        result = subprocess.run(
            [sys.executable, '-S', '-m', 'gocept.runner', '-C',
             os.path.join(self.dir, 'zope.conf'), '--once',
             f'{MODULE}:success'],
            env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual(['succeeded'], programs.read_report(self.dir))


class InProcessTests(unittest.TestCase):
    """Metrics as a middleware of MainLoops in this process."""

    def setUp(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        self.db = ZODB.DB(f'{directory}/Data.fs')
        self.addCleanup(self.db.close)
        self.conn = self.db.open()
        self.addCleanup(self.conn.close)
        self.addCleanup(transaction.abort)
        self.root = self.conn.root()

    def test_two_loops_in_one_process_have_registries_of_their_own(self):
        def first():
            self.root['first'] = 1

        def second():
            raise ValueError('second')
        metrics = []
        for worker in first, second:
            metrics.append(gocept.runner.metrics.Metrics())
            loop = gocept.runner.MainLoop(self.root, 0, worker, max_ticks=3,
                                          middleware=[metrics[-1]])
            with self.assertLogs('gocept.runner', logging.INFO):
                loop.run()
        name = f'{__name__}.InProcessTests.test_two_loops_in_one_process' \
               '_have_registries_of_their_own.<locals>.'
        self.assertEqual(3, metrics[0].registry.get_sample_value(
            'gocept_runner_ticks_total',
            {'worker': name + 'first', 'outcome': 'committed'}))
        self.assertEqual(3, metrics[1].registry.get_sample_value(
            'gocept_runner_ticks_total',
            {'worker': name + 'second', 'outcome': 'failed'}))
        self.assertIsNone(metrics[1].registry.get_sample_value(
            'gocept_runner_ticks_total',
            {'worker': name + 'first', 'outcome': 'committed'}))
        self.assertIsNone(prometheus_client.REGISTRY.get_sample_value(
            'gocept_runner_ticks_total',
            {'worker': name + 'first', 'outcome': 'committed'}))

    def test_a_bad_address_of_the_decorator_before_anything_is_opened(self):
        @gocept.runner.once(metrics='nowhere')
        def job():
            raise AssertionError('not to be called')
        with self.assertRaises(ConfigurationError) as caught:
            job(None, '/nonexistent/zope.conf')
        self.assertEqual("'nowhere' is not an address to serve metrics on:"
                         " give [HOST:]PORT", str(caught.exception))

    def test_addresses(self):
        address = gocept.runner.metrics.address
        self.assertEqual(('127.0.0.1', 9100), address(9100))
        self.assertEqual(('127.0.0.1', 9100), address('9100'))
        self.assertEqual(('0.0.0.0', 9100), address('0.0.0.0:9100'))
        self.assertEqual(('::1', 9100), address('[::1]:9100'))
        self.assertEqual(('metrics.example.com', 80),
                         address('metrics.example.com:80'))
        for bad in (True, 0, 65536, '', ':9100', '[::1]', '[x]:1', '::1:80',
                    'a_b:80', '-a:80', '1.2.3.4:'):
            with self.assertRaises(ConfigurationError, msg=repr(bad)):
                address(bad)
