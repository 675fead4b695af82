"""Several workers in one process, on a FileStorage on disk."""

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import BTrees.OOBTree
import transaction
import ZEO
import ZODB
import zope.component.hooks
import zope.security.management
import zope.site.folder
import zope.site.site

import gocept.runner
from gocept.runner import host
from gocept.runner import process
from gocept.runner import testing
from gocept.runner.config import ConfigurationError
from gocept.runner.middleware import Middleware
from gocept.runner.testing import write_zope_conf
from gocept.runner.tests import programs


NO_LOG_OUTPUT = '<eventlog>\n</eventlog>\n'
BIN = os.path.dirname(sys.executable)
WORKERS = 'gocept.runner.tests.hostworkers'
TIMEOUT = 30


class HostTest(unittest.TestCase):

    def setUp(self):
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)
        self.conf = write_zope_conf(self.directory, log=NO_LOG_OUTPUT)

        @gocept.runner.once()
        def prepare():
            # Workers count in a BTree: their commits do not conflict.
            root = zope.component.hooks.getSite()._p_jar.root()
            root['counts'] = BTrees.OOBTree.OOBTree()
        prepare(None, self.conf)

    def run_host(self, *workers, **options):
        """Run a Host of `workers` in a thread (the main thread's signal
        handlers stay the test runner's); return it when it has ended."""
        runner = host.Host(workers, **options)
        thread = threading.Thread(target=runner.run, args=(self.conf,))
        thread.start()
        thread.join(TIMEOUT)
        self.assertFalse(thread.is_alive(), 'the host did not end')
        return runner

    def read_counts(self):
        db = ZODB.DB(os.path.join(self.directory, 'Data.fs'))
        try:
            with db.transaction() as connection:
                return dict(connection.root()['counts'])
        finally:
            db.close()

    def add_subsite(self):
        @gocept.runner.once()
        def add():
            root = zope.component.hooks.getSite()
            folder = zope.site.folder.Folder()
            root['sub'] = folder
            folder.setSiteManager(zope.site.site.LocalSiteManager(folder))
        add(None, self.conf)


class IsolationTest(HostTest):
    """What is per worker stays the worker's, while the others run."""

    def test_sites_interactions_transactions_and_connections(self):
        self.add_subsite()
        both = threading.Barrier(2, timeout=TIMEOUT)
        seen = {}

        def worker(name):
            def work():
                site = zope.component.hooks.getSite()
                interaction = zope.security.management.queryInteraction()
                counts = counter()
                counts[name] = counts.get(name, 0) + 1
                both.wait()  # both are in a tick, uncommitted
                seen[name] = dict(
                    site=site.__name__,
                    principals=[p.principal.id
                                for p in interaction.participations]
                    if interaction else None,
                    transaction=transaction.get(),
                    connection=site._p_jar,
                    other=counts.get('b' if name == 'a' else 'a'))
                both.wait()
                return gocept.runner.Exit
            work.__qualname__ = name
            return work

        self.run_host(
            host.Worker(worker('a'), principal='zope.mgr'),
            host.Worker(worker('b'), site_name='sub'))
        a, b = seen['a'], seen['b']
        self.assertEqual((None, 'sub'), (a['site'], b['site']))
        self.assertEqual((['zope.mgr'], None),
                         (a['principals'], b['principals']))
        self.assertIsNot(a['transaction'], b['transaction'])
        self.assertIsNot(a['connection'], b['connection'])
        # Neither saw the other's change before it was committed.
        self.assertEqual((None, None), (a['other'], b['other']))
        self.assertEqual({'a': 1, 'b': 1}, self.read_counts())

    def test_every_worker_ticks_on_its_own_schedule(self):
        def fast():
            return gocept.runner.Exit if count('fast') == 20 else 0.01

        def slow():
            return gocept.runner.Exit if count('slow') == 2 else None

        runner = self.run_host(host.Worker(fast),
                               host.Worker(slow, ticks=0.2))
        self.assertIsNone(runner.stopped_because)
        self.assertEqual({'fast': 20, 'slow': 2}, self.read_counts())
        self.assertEqual(['Exit', 'Exit'],
                         [w.loop.stopped_because for w in runner.workers])

    def test_a_decorated_worker_keeps_its_settings(self):
        @gocept.runner.once(principal='zope.mgr')
        def job():
            interaction = zope.security.management.getInteraction()
            counter()['job_ran_as'] = [p.principal.id
                                       for p in interaction.participations]

        runner = self.run_host(job)
        [worker] = runner.workers
        self.assertTrue(worker.loop.once)
        self.assertEqual(['zope.mgr'], self.read_counts()['job_ran_as'])


class EndTest(HostTest):
    """The host ends as soon as its last worker has."""

    # See StopTimeTest.
    LIMIT = 0.5

    def run_timed(self, *workers, **options):
        """Run a Host of `workers` like run_host; return it and the time
        (time.monotonic()) at which its run returned."""
        ended = []

        def run(runner):
            runner.run(self.conf)
            ended.append(time.monotonic())
        runner = host.Host(workers, **options)
        thread = threading.Thread(target=run, args=(runner,))
        thread.start()
        thread.join(TIMEOUT)
        self.assertFalse(thread.is_alive(), 'the host did not end')
        return runner, ended[0]

    def test_when_every_worker_is_done(self):
        ticked = {}

        def exits():
            # A few ticks first: the host's main thread waits by then.
            ticked['exits'] = time.monotonic()
            return gocept.runner.Exit if count('exits') == 5 else 0.01

        @gocept.runner.once()
        def job():
            ticked['job'] = time.monotonic()

        runner, ended = self.run_timed(exits, job)
        self.assertEqual(['Exit', 'once'],
                         [w.loop.stopped_because for w in runner.workers])
        self.assertLess(ended - max(ticked.values()), self.LIMIT)

    def test_at_the_end_of_max_runtime(self):
        ticked = []

        def idle():
            ticked.append(time.monotonic())
            return 3600

        runner, ended = self.run_timed(idle, idle, max_runtime=0.2)
        self.assertEqual('max_runtime', runner.stopped_because)
        # Not at the host's next look at its limits (CHECK_INTERVAL).
        self.assertLess(ended - min(ticked), 0.2 + self.LIMIT)


class FailureTest(HostTest):

    def test_an_unknown_principal_ends_the_run_before_any_worker(self):
        ran = []
        runner = host.Host([host.Worker(lambda: ran.append(1)),
                            host.Worker(lambda: None, principal='nobody')])
        with self.assertRaises(ConfigurationError) as raised:
            runner.run(self.conf)
        self.assertEqual("Unknown principal 'nobody'", str(raised.exception))
        self.assertEqual([], ran)

    def test_an_unknown_site_ends_the_run_before_any_worker(self):
        runner = host.Host([host.Worker(lambda: None, site_name='nosuch')])
        with self.assertRaises(ConfigurationError):
            runner.run(self.conf)

    def test_a_setting_the_loop_does_not_take_ends_the_run_at_once(self):
        ran = []
        for settings, message in [
                (dict(tick=1), "unexpected keyword argument 'tick'"),
                (dict(ticks=-1), 'ticks must be a number of seconds, not'
                                 ' -1')]:
            runner = host.Host([host.Worker(lambda: ran.append(1)),
                                host.Worker(lambda: None, **settings)])
            with self.assertRaises(ConfigurationError) as raised:
                runner.run(self.conf)
            self.assertIn(message, str(raised.exception))
        self.assertEqual([], ran)

    def test_a_limit_that_is_not_a_positive_number_is_refused_at_once(self):
        for options in [dict(max_runtime=0), dict(max_runtime=-1),
                        dict(max_memory=float('nan'))]:
            with self.subTest(**options):
                with self.assertRaises(ConfigurationError):
                    host.Host([lambda: None], **options)

        def work():
            pass
        for settings in [dict(max_runtime=0), dict(max_ticks=0)]:
            with self.subTest(**settings):
                with self.assertRaises(ConfigurationError) as raised:
                    host.Worker(work, **settings)
                self.assertRegex(str(raised.exception),
                                 r'^Worker .*work: max_\w+ must be a ')

    def test_a_failed_worker_starts_again_the_others_go_on(self):
        self.addCleanup(setattr, process, 'RESTART_PAUSE',
                        process.RESTART_PAUSE)
        process.RESTART_PAUSE = 0.05
        failures = []

        class Failing(Middleware):
            def before_loop(self, loop):
                if len(failures) < 2:
                    failures.append(time.monotonic())
                    raise RuntimeError('the middleware failed')

        def steady():
            count('steady')
            return 0.01

        def flaky():
            count('flaky')
            return gocept.runner.Exit
        flaky.__qualname__ = 'flaky'

        with self.assertLogs('gocept.runner.process', logging.ERROR) as logs:
            runner = self.run_host(
                host.Worker(flaky, middleware=[Failing()]),
                host.Worker(steady), max_runtime=1)
        self.assertEqual(
            ['Worker flaky failed; starting it again in 0.05 seconds',
             'Worker flaky failed; starting it again in 0.1 seconds'],
            [record.getMessage() for record in logs.records])
        self.assertGreaterEqual(failures[1] - failures[0], 0.05)
        state = self.read_counts()
        self.assertEqual(1, state['flaky'])
        self.assertGreater(state['steady'], 5)
        self.assertEqual('max_runtime', runner.stopped_because)


class LimitsTest(HostTest):

    def test_max_memory_stops_every_worker(self):
        def forever():
            count('forever')
            return 0.01

        def sleepy():
            return 3600

        with self.assertLogs('gocept.runner.limits', logging.INFO) as logs:
            runner = self.run_host(forever, sleepy, max_memory=1)
        self.assertEqual('max_memory', runner.stopped_because)
        self.assertEqual(['max_memory', 'max_memory'],
                         [w.loop.stopped_because for w in runner.workers])
        [record] = logs.records
        self.assertRegex(record.getMessage(),
                         r'^Host reached max_memory \(\d+\), stopping\.$')


class HealthTest(HostTest):

    def test_the_heartbeat_waits_for_every_worker(self):
        heartbeat = os.path.join(self.directory, 'heartbeat')
        release = threading.Event()
        beats = []

        def quick():
            beats.append(os.stat(heartbeat).st_mtime_ns)
            return gocept.runner.Exit if release.is_set() else 0.01

        def hanging():
            # Hangs in its first tick until quick has ticked a while.
            while len(beats) < 20:
                time.sleep(0.01)
            release.set()
            return gocept.runner.Exit

        self.run_host(quick, hanging, heartbeat=heartbeat)
        # Written when the run started, not again while hanging hung.
        self.assertEqual(1, len(set(beats[:20])), beats)


def counter():
    return zope.component.hooks.getSite()._p_jar.root()['counts']


def count(name):
    """Count in the counter `name`; return the new count."""
    counts = counter()
    counts[name] = counts.get(name, 0) + 1
    return counts[name]


class SignalTest(unittest.TestCase):
    """A real process hosting two workers gets a real SIGTERM."""

    layer = testing.SubprocessLayer

    PROGRAM = """\
import sys
import zope.component.hooks
from gocept.runner import host
from gocept.runner import process

def count(name):
    def work():
        root = zope.component.hooks.getSite()
        setattr(root, name, getattr(root, name, 0) + 1)
        sys.stdout.write(f'{name} {getattr(root, name)}\\n')
        sys.stdout.flush()
        return 0.01
    work.__qualname__ = name
    return work

runner = host.Host([count('a'), count('b')]).run(sys.argv[1])
print('stopped because', runner.stopped_because, runner.signal, flush=True)
"""

    def test_SIGTERM_stops_every_worker_after_its_tick(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        conf = write_zope_conf(directory)
        process = subprocess.Popen(
            [sys.executable, '-c', self.PROGRAM, conf], cwd=directory,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.addCleanup(process.kill)
        seen = set()
        lines = []
        for line in process.stdout:
            lines.append(line)
            seen.update(line.split()[:1])
            if {'a', 'b'} <= seen:
                break
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=TIMEOUT)
        output = ''.join(lines) + rest
        self.assertEqual(0, process.returncode, output)
        self.assertIn(f'stopped because signal {signal.SIGTERM}', output)
        self.assertEqual(1, output.count('Received signal 15, terminating.'),
                         output)
        # Every tick a worker reported had committed: the last ones are in
        # the database.
        reported = {name: max(int(line.split()[1]) for line in output.split(
            '\n') if line.startswith(f'{name} ')) for name in 'ab'}
        db = ZODB.DB(os.path.join(directory, 'Data.fs'))
        try:
            with db.transaction() as connection:
                root = connection.root()['Application']
                stored = {name: getattr(root, name) for name in 'ab'}
        finally:
            db.close()
        self.assertEqual(reported, stored)


class StopTimeTest(unittest.TestCase):
    """An idle host ends as soon as SIGTERM has ended its workers."""

    layer = testing.SubprocessLayer

    TRIALS = 10
    # A host that ends with its last worker takes tens of milliseconds
    # (mostly the interpreter's own exit); one that sleeps its CHECK_INTERVAL
    # after the workers ended takes a second.
    LIMIT = 0.5

    def test_SIGTERM_ends_an_idle_host_at_once(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        conf = write_zope_conf(directory, log=NO_LOG_OUTPUT)
        output = os.path.join(directory, 'output')

        def read():
            with open(output) as f:
                return f.read()

        times = []
        # One database for every trial: the counts go on.
        for trial in range(1, self.TRIALS + 1):
            with open(output, 'w') as f:
                process = subprocess.Popen(
                    [os.path.join(BIN, 'gocept-runner'), '-C', conf,
                     f'{WORKERS}:index', f'{WORKERS}:archive',
                     '--ticks', '3600'],
                    cwd=directory, stdout=f, stderr=subprocess.STDOUT)
            self.addCleanup(process.wait)
            self.addCleanup(process.kill)
            # Both loops run: each has committed a tick and sleeps an hour.
            programs.wait_for_output(read, f'index {trial}\n')
            programs.wait_for_output(read, f'archive {trial}\n')
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            self.assertEqual(0, process.wait(TIMEOUT), read())
            times.append(time.monotonic() - sent)
        self.assertLess(max(times), self.LIMIT,
                        ' '.join(f'{t:.3f}' for t in times))


class CommandLineTest(unittest.TestCase):
    """``gocept-runner`` with several workers, as a real process."""

    layer = testing.SubprocessLayer

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.conf = write_zope_conf(self.dir)

    def start(self, *args, **env):
        process = subprocess.Popen(
            [os.path.join(BIN, 'gocept-runner'), '-C', self.conf, *args],
            cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=dict(os.environ, COLUMNS='80', **env))
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        return process

    def run_once(self, *args):
        process = self.start('--once', *args)
        stdout, stderr = process.communicate(timeout=TIMEOUT)
        return process.returncode, stdout, stderr

    def test_several_workers_once(self):
        status, stdout, stderr = self.run_once(
            f'{WORKERS}:index', f'{WORKERS}:cleanup', f'{WORKERS}:report')
        self.assertEqual((0, ''), (status, stderr))
        self.assertEqual(['cleanup 1', 'index 1', 'report 1'],
                         sorted(stdout.splitlines()))

    def test_the_first_failure_is_the_exit_status(self):
        status, stdout, stderr = self.run_once(
            f'{WORKERS}:index', f'{WORKERS}:failing')
        self.assertEqual(1, status)
        self.assertIn('index 1', stdout)
        self.assertIn('ERROR gocept.runner.runner Error in worker failing,'
                      ' transaction aborted', stdout)

    def test_several_workers_take_no_arguments(self):
        status, stdout, stderr = self.run_once(
            f'{WORKERS}:index', f'{WORKERS}:cleanup', 'an-argument')
        self.assertEqual(2, status)
        self.assertEqual(
            "gocept-runner: 'an-argument': several workers take no arguments"
            " of their own (see --help)\n", stderr)

    def test_a_word_after_dashes_is_an_argument_not_a_worker(self):
        status, stdout, stderr = self.run_once(
            f'{WORKERS}:index', '--', f'{WORKERS}:cleanup')
        self.assertEqual((0, ''), (status, stderr))
        self.assertEqual(['index 1'], stdout.splitlines())

    def test_systemd_hears_from_the_process_once_every_worker_ticked(self):
        notify = os.path.join(self.dir, 'notify')
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(notify)
        sock.settimeout(TIMEOUT)
        process = self.start(f'{WORKERS}:index', f'{WORKERS}:cleanup',
                             '--ticks', '0.01', NOTIFY_SOCKET=notify)
        states = []
        while states.count('WATCHDOG=1') < 3:
            states.extend(sock.recv(4096).decode().splitlines())
        process.send_signal(signal.SIGTERM)
        while states[-1] != 'STOPPING=1':
            states.extend(sock.recv(4096).decode().splitlines())
        stdout, stderr = process.communicate(timeout=TIMEOUT)
        self.assertEqual(0, process.returncode, stderr)
        self.assertEqual('READY=1', states[0])
        self.assertEqual(1, states.count('READY=1'))
        self.assertEqual({'READY=1', 'WATCHDOG=1', 'STOPPING=1'}, set(states))
        self.assertEqual(1, stdout.count('Received signal 15, terminating.'))

    def test_under_zdaemon(self):
        zdaemon_conf = os.path.join(self.dir, 'zdaemon.conf')
        transcript = os.path.join(self.dir, 'transcript.log')
        with open(zdaemon_conf, 'w') as f:
            f.write(ZDAEMON_CONF.format(
                program=f"{os.path.join(BIN, 'gocept-runner')} -C {self.conf}"
                        f' {WORKERS}:index {WORKERS}:cleanup',
                dir=self.dir, transcript=transcript))
        zdaemon = [os.path.join(BIN, 'zdaemon'), '-C', zdaemon_conf]
        self.addCleanup(subprocess.run, [*zdaemon, 'stop'],
                        capture_output=True, timeout=120)
        subprocess.run([*zdaemon, 'start'], check=True, capture_output=True,
                       timeout=120, cwd=self.dir)
        deadline = time.monotonic() + TIMEOUT
        output = ''
        while not ('index 2' in output and 'cleanup 2' in output):
            self.assertLess(time.monotonic(), deadline, output)
            time.sleep(0.05)
            with open(transcript) as f:
                output = f.read()
        subprocess.run([*zdaemon, 'stop'], check=True, capture_output=True,
                       timeout=120)
        with open(transcript) as f:
            output = f.read()
        self.assertEqual(
            'INFO gocept.runner.runner Received signal 15, terminating.',
            output.splitlines()[-1])
        with open(os.path.join(self.dir, 'zdaemon.log')) as f:
            self.assertRegex(f.read(), r'pid \d+: exit status 0\n')


ZDAEMON_CONF = """\
<runner>
  program {program}
  directory {dir}
  socket-name {dir}/zdsock
  transcript {transcript}
  exit-codes 0,2
</runner>
<eventlog>
  <logfile>
    path {dir}/zdaemon.log
  </logfile>
</eventlog>
"""


class OutageTest(unittest.TestCase):
    """Every worker of a host waits for its ZEO server on its own."""

    layer = testing.SubprocessLayer

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.server = testing.ZEOServer(self.dir)
        self.server.start()
        self.addCleanup(self.server.stop)
        self.conf = programs.write_zeo_client_conf(
            self.dir, self.server.address)
        self.output = os.path.join(self.dir, 'output')

    def read(self):
        with open(self.output) as f:
            return f.read()

    def counts(self):
        """The last count each worker printed."""
        counts = {}
        for line in self.read().splitlines():
            words = line.split()
            if len(words) == 2 and words[0] in ('index', 'cleanup'):
                counts[words[0]] = int(words[1])
        return counts

    def wait_for_more(self, than):
        deadline = time.monotonic() + TIMEOUT
        while True:
            counts = self.counts()
            if all(counts.get(name, 0) > than.get(name, 0)
                   for name in ('index', 'cleanup')):
                return counts
            self.assertLess(time.monotonic(), deadline, self.read())
            time.sleep(0.05)

    def test_both_wait_and_go_on(self):
        with open(self.output, 'w') as output:
            process = subprocess.Popen(
                [os.path.join(BIN, 'gocept-runner'), '-C', self.conf,
                 f'{WORKERS}:index', f'{WORKERS}:cleanup', '--ticks', '0.05'],
                cwd=self.dir, stdout=output, stderr=subprocess.STDOUT)
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        self.wait_for_more({})
        self.server.stop()
        # Until a worker has met the outage: a tick retries a few times,
        # waiting a second for the server each time, before it gives up.
        programs.wait_for_output(self.read, programs.OUTAGE)
        self.assertIsNone(process.poll())
        during = self.counts()
        self.server.start()
        self.wait_for_more(during)
        process.send_signal(signal.SIGTERM)
        self.assertEqual(0, process.wait(TIMEOUT))
        output = self.read()
        # Each worker that met the outage says so once, and once that it
        # goes on (one whose tick waited for the server meets none).
        met = 0
        for name in ('index', 'cleanup'):
            warnings = len(re.findall(
                f'WARNING gocept.runner.outage Storage unavailable .*'
                f' worker {name}', output))
            self.assertLessEqual(warnings, 1, output)
            self.assertEqual(warnings, output.count(
                f'INFO gocept.runner.outage Storage available again, worker'
                f' {name} goes on'), output)
            met += warnings
        self.assertGreater(met, 0, output)
        # (ZODB logs an ERROR of its own for a load that failed.)
        self.assertEqual([], re.findall(
            '^(?:ERROR|CRITICAL) gocept.runner.*', output, re.MULTILINE),
            output)
        # Nothing lost: the last counts they printed are those stored.
        db = ZEO.DB(('127.0.0.1', self.server.port))
        try:
            with db.transaction() as connection:
                stored = dict(connection.root()['counts'])
        finally:
            db.close()
        self.assertEqual(self.counts(), stored)
