"""Faults injected into real runner programs: forks, odd results and errors
of workers, a vanishing heartbeat directory, signals from start to end.

Each test runs the installed ``gocept-runner`` on a worker of
tests/faultworkers.py, with a FileStorage in a temporary directory.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import zc.lockfile
import ZODB
import ZODB.FileStorage

import gocept.runner.tests.faultworkers
from gocept.runner import testing


BIN = os.path.dirname(sys.executable)
WORKERS = gocept.runner.tests.faultworkers.__name__

SITE_ZCML = f"""\
<configure xmlns="http://namespaces.zope.org/zope">
  <include package="gocept.runner" file="ftesting.zcml" />
  <utility factory="{WORKERS}.zcml_gate"
           provides="zope.interface.Interface" name="{WORKERS}" />
  <subscriber handler="{WORKERS}.opened"
              for="zope.processlifetime.IDatabaseOpened" />
  <subscriber handler="{WORKERS}.closing"
              for="zope.interface.interfaces.IUnregistered" />
</configure>
"""

LOG = """\
<eventlog>
  level INFO
  <logfile>
    path {path}
    format %(levelname)s %(name)s %(message)s
  </logfile>
</eventlog>
"""

TIMEOUT = 30

# What pip writes for a console_scripts entry point.
WRAPPER = """\
#!{python}
import sys
from {module} import {name}
if __name__ == '__main__':
    sys.exit({name}())
"""

# The object id of the root folder (the root object's is 0).
ROOT_FOLDER_OID = (1).to_bytes(8, 'big')


class Run:
    """A directory with zope.conf, a FileStorage and a program run in it."""

    def __init__(self, test):
        self.dir = tempfile.mkdtemp()
        test.addCleanup(shutil.rmtree, self.dir)
        self.test = test
        site_zcml = self.path('site.zcml')
        with open(site_zcml, 'w') as f:
            f.write(SITE_ZCML)
        self.conf = testing.write_zope_conf(
            self.dir, log=LOG.format(path=self.path('log')),
            site_zcml=site_zcml)
        self.process = None

    def path(self, *names):
        return os.path.join(self.dir, *names)

    def start(self, worker, *args, **env):
        """Start gocept-runner on `worker` with `args`; `env` adds to its
        environment.  Return the Popen."""
        process = self.popen(
            [os.path.join(BIN, 'gocept-runner'), '-C', self.conf, *args,
             f'{WORKERS}:{worker}'], **env)
        return process

    def start_program(self, worker, *args, **env):
        """Start the decorated `worker` as the program that pip's wrapper
        of a console_scripts entry point would be."""
        path = self.path(worker)
        with open(path, 'w') as f:
            f.write(WRAPPER.format(
                python=sys.executable, module=WORKERS, name=worker))
        os.chmod(path, 0o755)
        return self.popen([path, '-C', self.conf, *args], **env)

    def popen(self, args, **env):
        with open(self.path('output'), 'ab') as output:
            process = subprocess.Popen(
                args, cwd=self.dir, stdout=output, stderr=output,
                env=dict(os.environ, FAULT_DIR=self.dir, COLUMNS='80', **env))
        self.test.addCleanup(process.wait)
        self.test.addCleanup(_kill, process)
        if self.process is None:
            self.process = process
        return process

    def run(self, worker, *args, **env):
        """Run gocept-runner to its end; return the exit status."""
        return self.start(worker, *args, **env).wait(TIMEOUT)

    def wait(self):
        return self.process.wait(TIMEOUT)

    def read(self, name):
        try:
            with open(self.path(name)) as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def log(self):
        return self.read('log')

    def output(self):
        return self.read('output')

    def report(self):
        return self.read('report').splitlines()

    def report_lines(self, *starts):
        return [line for line in self.report() if line.startswith(starts)]

    def log_lines(self, level):
        return [line for line in self.log().splitlines()
                if line.startswith(f'{level} ')]

    def poll(self, condition, what):
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            if self.process is not None and self.process.poll() is not None:
                if condition():
                    break
                raise AssertionError(
                    f'Exited with {self.process.returncode} before {what};'
                    f' log:\n{self.log()}\noutput:\n{self.output()}')
            if time.monotonic() > deadline:
                raise AssertionError(
                    f'No {what} after {TIMEOUT} s; log:\n{self.log()}')
            time.sleep(0.005)

    def wait_for_gate(self, point):
        self.poll(lambda: os.path.exists(self.path(f'at-{point}')),
                  f'gate {point}')

    def release(self, point):
        os.remove(self.path(f'at-{point}'))

    def wait_for_report(self, pattern):
        """Wait for a line of the report matching `pattern`; return the
        match."""
        found = []

        def condition():
            found[:] = [m for m in map(re.compile(pattern).fullmatch,
                                       self.report()) if m]
            return found
        self.poll(condition, f'report {pattern!r}')
        return found[0]

    def wait_for_log(self, fragment):
        self.poll(lambda: fragment in self.log(), f'log {fragment!r}')

    def commits(self):
        """The numbers of the commits that the workers reported."""
        return [int(line.split()[1]) for line in self.report()
                if line.startswith('committed ')]

    def stored_count(self):
        db = ZODB.DB(ZODB.FileStorage.FileStorage(
            self.path('Data.fs'), read_only=True))
        try:
            with db.transaction() as connection:
                return connection.root().get('count')
        finally:
            db.close()


def _kill(process):
    if process.poll() is None:
        process.kill()


class FaultTest(unittest.TestCase):
    layer = testing.SubprocessLayer

    def assertClean(self, run):
        """No traceback on stdout/stderr, no ERROR in the log."""
        self.assertNotIn('Traceback', run.output())
        self.assertEqual([], run.log_lines('ERROR'))


class ForkTest(FaultTest):
    """A worker that forks: the child never harms the parent's run."""

    CASES = [('os', 'exit', 7), ('os', 'return', 0), ('os', 'error', 1),
             ('multiprocessing', 'exit', 7), ('multiprocessing', 'return', 0),
             ('multiprocessing', 'error', 1)]

    def test_the_child_leaves_locks_storage_and_commits_to_the_parent(self):
        runs = []
        for fork, child, status in self.CASES:
            run = Run(self)
            run.start('fork', '--lock-file', 'run.lock', '--ticks', '0.02',
                      FAULT_FORK=fork, FAULT_CHILD=child)
            runs.append(run)
        for run, (fork, child, status) in zip(runs, self.CASES):
            with self.subTest(fork=fork, child=child):
                self.assertParentUnharmed(run, status)
                if child == 'error':
                    self.assertIn('ValueError: the child failed',
                                  run.output())

    def test_a_child_forked_at_start_up_that_raises(self):
        # Not the worker: a subscriber to DatabaseOpened forks.
        cases = [('exit', 7), ('error', 1)]
        runs = []
        for child, status in cases:
            run = Run(self)
            run.start('count', '--lock-file', 'run.lock', '--ticks', '0.02',
                      FAULT_FORK_AT='opened', FAULT_FORK='os',
                      FAULT_CHILD=child)
            runs.append(run)
        for run, (child, status) in zip(runs, cases):
            with self.subTest(child=child):
                self.assertParentUnharmed(run, status)

    def test_a_new_database_is_prepared_again_after_a_subscriber_failed(self):
        # Runners started together on a new database race to create it; a
        # subscriber of another package may then fail on a root folder that
        # is not there in its own connection.  The next attempt finds it.
        run = Run(self)
        status = run.run('count', '--once', FAULT_OPENED_FAILS='3')
        self.assertEqual(0, status, run.output())
        self.assertEqual(['opened fails 1', 'opened fails 2',
                          'opened fails 3', 'committed 1'],
                         run.report_lines('opened', 'committed'))

    def test_a_subscriber_failing_on_an_existing_database_is_an_error(self):
        # Not a race: the site's own code is at fault, once is enough.
        run = Run(self)
        self.assertEqual(0, run.run('count', '--once'), run.output())
        status = run.run('count', '--once', FAULT_OPENED_FAILS='1')
        self.assertEqual(1, status)
        self.assertEqual(['committed 1', 'opened fails 1'],
                         run.report_lines('opened', 'committed'))
        self.assertIn(
            "gocept-runner: AttributeError: 'NoneType' object has no"
            " attribute 'getSiteManager'", run.output().splitlines())

    def assertParentUnharmed(self, run, status):
        """The child of `run` exited with `status`; the parent holds its
        locks, goes on and closes the database alone."""
        run.wait_for_report(f'child exited {status}')
        run.wait_for_report('committed 1')
        after_fork = max(run.commits())
        # The parent holds both its locks: a second run fails, ...
        second = run.start('count', '--once', '--lock-file',
                           'run.lock').wait(TIMEOUT)
        self.assertEqual(75, second)
        self.assertIn('Another run holds the lock file run.lock',
                      run.output().splitlines()[-1])
        # ... and so would one with another lock file.
        with self.assertRaises(zc.lockfile.LockError):
            zc.lockfile.LockFile(run.path('Data.fs.lock')).close()
        # It goes on committing.
        run.wait_for_report(f'committed {after_fork + 2}')
        run.process.send_signal(signal.SIGTERM)
        self.assertEqual(0, run.wait())
        self.assertEqual(max(run.commits()), run.stored_count())
        parent = run.wait_for_report(r'parent (\d+)').group(1)
        self.assertEqual(
            [f"closing in {parent} with the runner's handlers: True"],
            [line for line in run.report() if line.startswith('closing')])
        self.assertEqual([], run.log_lines('ERROR'))


class ResultTest(FaultTest):
    """Whatever a worker returns, the loop goes on."""

    # What the worker returns; the pause after it with --ticks 2; whether
    # that is a WARNING.
    SHORT = [('math.nan', 2, True), ('-1', 0, True), ('-math.inf', 0, True),
             ("'a string'", 2, True), ('object()', 2, True),
             ("Decimal('0.2')", 0.2, False), ('Fraction(1, 5)', 0.2, False),
             ('0.2', 0.2, False)]
    LONG = ['math.inf', '1e300', '10**400', 'Decimal("1e400")']

    def test_a_pause_that_is_no_number_of_seconds_is_replaced(self):
        runs = []
        for result, pause, warning in self.SHORT:
            run = Run(self)
            run.start('result', '--ticks', '2', FAULT_RESULT=result)
            runs.append(run)
        for run, (result, pause, warning) in zip(runs, self.SHORT):
            with self.subTest(result=result):
                self.assertEqual(0, run.wait(), run.output())
                self.assertClean(run)
                self.assertEqual(3, run.stored_count())
                times = [float(line.split()[-1]) for line in run.report()
                         if line.startswith('tick ')]
                for gap in (times[1] - times[0], times[2] - times[1]):
                    self.assertGreaterEqual(gap, pause - 0.01)
                    # Under load a tick may take its time, but not a pause
                    # that is another one's.
                    self.assertLess(gap, pause + 1)
                # Two ticks returned it: one WARNING.
                self.assertEqual(int(warning),
                                 len(run.log_lines('WARNING')), run.log())

    def test_a_pause_too_long_to_sleep_is_a_year(self):
        runs = []
        for result in self.LONG:
            run = Run(self)
            run.start('result', FAULT_RESULT=result)
            runs.append(run)
        for run, result in zip(runs, self.LONG):
            with self.subTest(result=result):
                run.wait_for_log('WARNING')
                self.assertIsNone(run.process.poll())
                run.process.send_signal(signal.SIGTERM)
                self.assertEqual(0, run.wait())
                self.assertClean(run)
                self.assertEqual(1, run.stored_count())
                [warning] = run.log_lines('WARNING')
                self.assertIn('sleeping 31536000 seconds', warning)

    def test_one_warning_for_each_kind_of_mistake(self):
        run = Run(self)
        status = run.run(
            'result', '--ticks', '0',
            FAULT_RESULT="(math.nan, -1, 'a string')[n % 3]", FAULT_TICKS='7')
        self.assertEqual(0, status)
        self.assertClean(run)
        self.assertEqual(7, run.stored_count())
        warnings = run.log_lines('WARNING')
        self.assertEqual(3, len(warnings), warnings)
        for fragment in 'nan', '-1', "'a string'":
            self.assertEqual(
                1, len([w for w in warnings if f'returned {fragment},' in w]),
                warnings)

    def test_ticks_of_a_year_sleep_until_stopped(self):
        # The longest --ticks (longer is a usage error: see
        # test_faults_startup); a worker's longer results are clamped (above).
        run = Run(self)
        run.start('count', '--ticks', '31536000')
        run.wait_for_report('committed 1')
        self.assertIsNone(run.process.poll())
        run.process.send_signal(signal.SIGTERM)
        self.assertEqual(0, run.wait())
        self.assertClean(run)
        self.assertEqual(1, run.stored_count())


class RaiseTest(FaultTest):
    """Whatever a worker raises, the tick is aborted and the loop goes on."""

    def test_a_BaseException_is_an_error_of_the_tick(self):
        cases = ['GeneratorExit', 'custom']
        runs = []
        for raised in cases:
            loop, once = Run(self), Run(self)
            loop.start('raises', '--ticks', '0', FAULT_RAISE=raised)
            once.start('raises', '--once', FAULT_RAISE=raised)
            runs.append((loop, once))
        for (loop, once), raised in zip(runs, cases):
            with self.subTest(raised=raised):
                name = {'custom': 'CustomBaseException'}.get(raised, raised)
                # The loop went on after the first tick.
                self.assertEqual(0, loop.wait(), loop.output())
                self.assertEqual(1, once.wait(), once.output())
                self.assertEqual(2, loop.stored_count())
                self.assertIsNone(once.stored_count())
                for run in loop, once:
                    self.assertNotIn('Traceback', run.output())
                    [error] = run.log_lines('ERROR')
                    self.assertIn('Error in worker raises, transaction'
                                  ' aborted', error)
                    self.assertIn('Traceback (most recent call last)',
                                  run.log())
                    self.assertIn(name, run.log())

    def test_a_doomed_transaction_is_aborted_quietly(self):
        loop, once = Run(self), Run(self)
        loop.start('doom', '--ticks', '0', '--max-ticks', '3')
        once.start('doom', '--once')
        self.assertEqual(75, loop.wait())
        self.assertEqual(0, once.wait())
        for run in loop, once:
            self.assertClean(run)
            self.assertEqual([], run.log_lines('WARNING'))
            self.assertIsNone(run.stored_count())


class SiteTest(FaultTest):
    """Each tick starts with the loop's site and interaction."""

    def test_site_and_interaction_left_behind(self):
        plain, principal = Run(self), Run(self)
        plain.start('meddle', '--ticks', '0')
        principal.start('meddle', '--ticks', '0', '--principal', 'zope.mgr')
        for run, interaction in (plain, 'None'), (principal, "['zope.mgr']"):
            with self.subTest(interaction=interaction):
                self.assertEqual(0, run.wait(), run.output())
                self.assertClean(run)
                self.assertEqual(4, run.stored_count())
                ticks = [line for line in run.report()
                         if line.startswith('tick ')]
                self.assertEqual(4, len(ticks), ticks)
                for number, line in enumerate(ticks, 1):
                    self.assertEqual(
                        f'tick {number}: site Folder {ROOT_FOLDER_OID!r},'
                        f' interaction {interaction}',
                        line)


class HeartbeatTest(FaultTest):

    def test_its_directory_removed(self):
        run = Run(self)
        os.mkdir(run.path('beat'))
        heartbeat = run.path('beat', 'heartbeat')
        run.start('count', '--ticks', '0.01', '--heartbeat', heartbeat)
        run.wait_for_report('committed 2')
        shutil.rmtree(run.path('beat'))
        run.wait_for_log('WARNING')
        after = max(run.commits())
        run.wait_for_report(f'committed {after + 3}')
        run.process.send_signal(signal.SIGTERM)
        self.assertEqual(0, run.wait())
        self.assertClean(run)
        [warning] = run.log_lines('WARNING')
        self.assertIn(f'Cannot write the heartbeat file {heartbeat}', warning)


class StartupSignalTest(FaultTest):
    """Signals while the program starts: importing the worker, executing the
    site ZCML, opening the database."""

    POINTS = ['import', 'zcml', 'opened']

    def test_signals_during_start_up(self):
        # gocept-runner MODULE:FUNCTION, or a decorated worker's program.
        cases = [(None, point, signum) for point in self.POINTS
                 for signum in (signal.SIGUSR2, signal.SIGHUP, signal.SIGTERM,
                                signal.SIGINT)]
        cases += [('count_once', 'zcml', signal.SIGUSR2),
                  ('count_loop', 'opened', signal.SIGTERM),
                  ('count_once', 'opened', signal.SIGINT)]
        runs = []
        for program, point, signum in cases:
            run = Run(self)
            if program is not None:
                run.start_program(program, FAULT_GATE=point)
            elif signum == signal.SIGTERM:
                run.start('count', FAULT_GATE=point)
            else:
                run.start('count', '--once', FAULT_GATE=point)
            runs.append(run)
        for run, (program, point, signum) in zip(runs, cases):
            with self.subTest(program=program, point=point,
                              signal=signum.name):
                run.wait_for_gate(point)
                for i in range(3):
                    run.process.send_signal(signum)
                run.release(point)
                status = run.wait()
                self.assertNotIn('Traceback', run.output())
                if signum == signal.SIGUSR2:
                    self.assertEqual(0, status, run.output())
                    self.assertEqual(1, run.stored_count())
                    self.assertNotIn('Received signal', run.log())
                    continue
                # A stop signal before the first tick: no tick runs.
                self.assertEqual(130 if signum == signal.SIGINT else 0,
                                 status, run.output())
                self.assertIn(
                    'INFO gocept.runner.runner Received signal'
                    f' {int(signum)}, terminating.', run.log())
                self.assertEqual([], run.commits())


class EndSignalTest(FaultTest):

    def test_a_burst_of_SIGTERM_while_the_database_closes(self):
        run = Run(self)
        run.start('count', '--once', FAULT_GATE='close')
        run.wait_for_gate('close')
        for i in range(50):
            run.process.send_signal(signal.SIGTERM)
        run.release('close')
        self.assertEqual(0, run.wait())
        self.assertClean(run)
        self.assertEqual(1, run.stored_count())

    def test_SIGTERM_until_the_process_has_exited(self):
        # A program's signals are ignored from the end of its run on, so
        # that a stream of them while the interpreter shuts down does not
        # turn its exit status into a death by signal.
        for start in ('start', 'start_program'):
            run = Run(self)
            if start == 'start':
                run.start('count', '--once', FAULT_GATE='close')
            else:
                run.start_program('count_once', FAULT_GATE='close')
            run.wait_for_gate('close')
            sender = threading.Thread(
                target=_signal_until_exit, args=(run.process, signal.SIGTERM))
            sender.start()
            run.release('close')
            self.assertEqual(0, run.wait(), start)
            sender.join()
            self.assertEqual(1, run.stored_count())

    def test_handlers_are_restored_after_the_database_is_closed(self):
        # Called in a process of its own: a decorated worker, one whose
        # zope.conf is missing, gocept-runner's main().
        run = Run(self)
        signums = [signal.SIGTERM, signal.SIGHUP, signal.SIGINT,
                   signal.SIGUSR2]
        run.popen([sys.executable, '-c', (
            'import signal, sys\n'
            'import gocept.runner.cli\n'
            f'from {WORKERS} import count_once\n'
            f'signums = {[int(s) for s in signums]}\n'
            'before = [signal.getsignal(s) for s in signums]\n'
            'def restored():\n'
            '    after = [signal.getsignal(s) for s in signums]\n'
            '    print("restored", before == after, flush=True)\n'
            f'count_once(None, {run.conf!r})\n'
            'restored()\n'
            'try:\n'
            '    count_once(None, "missing.conf")\n'
            'except gocept.runner.ConfigurationError:\n'
            '    restored()\n'
            'print("status", gocept.runner.cli.main(\n'
            f'    ["-C", {run.conf!r}, "--once", "{WORKERS}:count"]))\n'
            'restored()\n'
        )])
        self.assertEqual(0, run.process.wait(TIMEOUT), run.output())
        self.assertEqual(['restored True'] * 2 + ['status 0', 'restored True'],
                         run.output().splitlines())
        self.assertEqual(
            ["closing in {} with the runner's handlers: True".format(
                run.process.pid)] * 2,
            [line for line in run.report() if line.startswith('closing')])
        self.assertEqual(2, run.stored_count())

    def test_SIGINT_to_a_once_run_that_committed_nothing(self):
        run = Run(self)
        run.start('hold', '--once', FAULT_GATE='tick')
        run.wait_for_gate('tick')
        run.process.send_signal(signal.SIGINT)
        self.assertEqual(130, run.wait())
        self.assertClean(run)
        self.assertIsNone(run.stored_count())
        self.assertIn('Received signal 2, terminating.', run.log())
        help = subprocess.run(
            [os.path.join(BIN, 'gocept-runner'), '--help'],
            capture_output=True, text=True, env=dict(os.environ, COLUMNS='80'),
            check=True).stdout
        self.assertIn('130', help)
        self.assertIn('SIGINT', ' '.join(help.split()))


class TicksTest(FaultTest):
    """The `ticks` of the decorators, as a program sets them."""

    def run_decorated(self, run, ticks):
        run.popen([sys.executable, '-c', (
            'import decimal, fractions, math\n'
            'import gocept.runner\n'
            f'from {WORKERS} import result\n'
            f'gocept.runner.appmain(ticks={ticks})(result)'
            f'(None, {run.conf!r})\n')], FAULT_RESULT='None')
        return run.process.wait(TIMEOUT)

    def test_a_number_of_seconds(self):
        runs = {ticks: Run(self) for ticks in (
            "decimal.Decimal('0.01')", 'fractions.Fraction(1, 100)')}
        for ticks, run in runs.items():
            with self.subTest(ticks=ticks):
                self.assertEqual(0, self.run_decorated(run, ticks),
                                 run.output())
                self.assertClean(run)
                self.assertEqual(3, run.stored_count())

    def test_not_a_number_of_seconds(self):
        for ticks in 'math.nan', '-1', "'1'", 'None':
            with self.subTest(ticks=ticks):
                run = Run(self)
                self.assertEqual(1, self.run_decorated(run, ticks))
                self.assertIn(
                    'gocept.runner.config.ConfigurationError: ticks must be'
                    ' a number of seconds, not', run.output().splitlines()[-1])
                self.assertEqual([], run.commits())


def _signal_until_exit(process, signum):
    """Send `signum` to `process` every half millisecond until it exits."""
    while process.poll() is None:
        try:
            process.send_signal(signum)
        except ProcessLookupError:
            break
        time.sleep(0.0005)
