"""The examples of the deployment guides in docs/howto/, run as written
there.

``/srv/myapp`` becomes a temporary directory with ``bin/myapp-runner`` and
``bin/myjob`` (workers of tests/workers.py), ``bin/zdaemon``, ``zope.conf``
and ``var/``.
"""

import configparser
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import ZODB
import ZODB.FileStorage

import gocept.runner
from gocept.runner import testing
from gocept.runner.tests.test_cli import WORKERS
from gocept.runner.tests.test_cli import WRAPPER


BIN = os.path.dirname(sys.executable)
HERE = os.path.dirname(gocept.runner.__file__)
CHECKOUT = os.path.normpath(os.path.join(HERE, '..', '..', '..'))
README = os.path.join(CHECKOUT, 'README.rst')
HOWTO = os.path.join(CHECKOUT, 'docs', 'howto')
PREFIX = '/srv/myapp'

ZOPE_CONF = """\
site-definition {site}
<zodb>
  <filestorage>
    path {prefix}/var/Data.fs
  </filestorage>
</zodb>
<eventlog>
  level debug
  <logfile>
    path STDOUT
    level info
    format %(levelname)s %(name)s %(message)s
  </logfile>
  <logfile>
    path {prefix}/var/event.log
    format %(levelname)s %(name)s %(message)s
  </logfile>
</eventlog>
"""


def howto(name):
    """The path of the how-to guide docs/howto/`name`.rst."""
    return os.path.join(HOWTO, f'{name}.rst')


def readme_block(first_line, readme=README, after=None):
    """The literal block of README.rst (or the file `readme`) from the line
    that starts with `first_line` (the first after the line `after`)."""
    with open(readme) as f:
        lines = f.read().splitlines()
    begin = lines.index(after) if after else 0
    for start, line in enumerate(lines[begin:], begin):
        if line.strip().startswith(first_line):
            break
    else:
        raise AssertionError(f'{readme} has no block {first_line!r}')
    indent = len(lines[start]) - len(lines[start].lstrip())
    block = []
    for line in lines[start:]:
        if line.strip() and not line.startswith(' ' * indent):
            break
        block.append(line[indent:])
    return '\n'.join(block).strip() + '\n'


class DeploymentTest(unittest.TestCase):
    layer = testing.DocsLayer

    def setUp(self):
        if not os.path.isdir(HOWTO):
            self.skipTest('docs/ is not beside the package (no checkout)')
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        os.mkdir(self.path('bin'))
        os.mkdir(self.path('var'))
        self.write('zope.conf', ZOPE_CONF.format(
            site=os.path.join(HERE, 'ftesting.zcml'), prefix=self.dir))
        self.script('myapp-runner', 'count_on')
        self.script('myjob', 'count_held')
        os.symlink(os.path.join(BIN, 'zdaemon'), self.path('bin', 'zdaemon'))

    def path(self, *names):
        return os.path.join(self.dir, *names)

    def write(self, name, text):
        with open(self.path(name), 'w') as f:
            f.write(text)
        return self.path(name)

    def script(self, name, worker):
        path = self.write(os.path.join('bin', name), WRAPPER.format(
            python=sys.executable, module=WORKERS, name=worker))
        os.chmod(path, 0o755)

    def here(self, text):
        """`text` from the docs, /srv/myapp replaced by the test's dir."""
        return text.replace(PREFIX, self.dir)

    def count(self):
        """The count the workers keep in the database."""
        db = ZODB.DB(ZODB.FileStorage.FileStorage(self.path('var', 'Data.fs')))
        try:
            with db.transaction() as connection:
                return connection.root().get('count')
        finally:
            db.close()

    def wait_for(self, path, pattern, timeout=60):
        """Wait until the file `path` matches `pattern`; return its text."""
        deadline = time.monotonic() + timeout
        while True:
            text = ''
            if os.path.exists(path):
                with open(path) as f:
                    text = f.read()
            if re.search(pattern, text, re.MULTILINE):
                return text
            if time.monotonic() > deadline:
                self.fail(f'{path} does not match {pattern!r}: {text!r}')
            time.sleep(0.05)

    def assertLastTickCommitted(self, output):
        """The runner's output ends with the seed's log line after the
        count it printed last, which is the count in the database."""
        self.assertEqual(
            'INFO gocept.runner.runner Received signal 15, terminating.',
            output.splitlines()[-1])
        counts = re.findall(r'^count (\d+)$', output, re.MULTILINE)
        self.assertEqual(int(counts[-1]), self.count())


class ZdaemonTest(DeploymentTest):

    def setUp(self):
        super().setUp()
        self.write('zdaemon.conf', self.here(
            readme_block('<runner>', howto('zdaemon'))))
        # The guide's session: "$ command" lines, each followed by its
        # output.
        session = self.here(readme_block(
            f'$ {PREFIX}/bin/zdaemon -C {PREFIX}/zdaemon.conf start',
            howto('zdaemon')))
        self.steps = re.findall(r'^\$ (.*)\n((?:[^$].*\n)*)', session,
                                re.MULTILINE)
        self.addCleanup(
            subprocess.run, [self.path('bin', 'zdaemon'), '-C',
                             self.path('zdaemon.conf'), 'stop'],
            capture_output=True, timeout=120)

    def step(self, action):
        """Run the next command of the guide's session, which is `action`,
        and compare its output with the guide's (``...`` matches anything, the
        dots zdaemon prints while it waits are left out); return its exit
        status."""
        command, expected = self.steps.pop(0)
        self.assertEqual(action, command.split()[-1])
        result = subprocess.run(
            shlex.split(command), capture_output=True, text=True,
            timeout=120)
        output = [line for line in result.stdout.splitlines()
                  if line.strip(' .')]
        expected = expected.splitlines()
        self.assertEqual(len(expected), len(output), result.stdout)
        for pattern, line in zip(expected, output):
            self.assertRegex(
                line, '^' + '.*'.join(map(re.escape, pattern.split('...')))
                + '$')
        self.assertEqual('', result.stderr)
        return result.returncode

    def test_start_status_rotate_stop(self):
        transcript = self.path('var', 'myapp-runner.log')
        self.assertEqual(0, self.step('start'))
        self.assertEqual(0, self.step('status'))
        self.wait_for(transcript, r'^count 3$')

        # logrotate moves the logs away, then its postrotate script tells
        # zdaemon to reopen the transcript and the runner its log file.
        rotate = self.here(readme_block(f'{PREFIX}/var/myapp-runner.log ',
                                        howto('zdaemon')))
        logs = rotate.splitlines()[0].split()[:-1]
        self.assertEqual([transcript, self.path('var', 'event.log')], logs)
        postrotate = [line for line in rotate.splitlines()
                      if 'logreopen' in line]
        for log in logs:
            os.rename(log, log + '.1')
        subprocess.run(shlex.split(postrotate[0]), check=True, timeout=60,
                       capture_output=True)
        self.wait_for(transcript, r'^count \d+$')
        self.wait_for(logs[1], r'^DEBUG gocept.runner.runner ')

        self.assertEqual(0, self.step('stop'))
        self.assertEqual(3, self.step('status'))
        self.assertEqual([], self.steps)
        with open(transcript) as f:
            output = f.read()
        self.assertLastTickCommitted(output)
        for log in logs:
            with open(log + '.1') as f:
                self.assertNotIn('Received signal', f.read())
            with open(log) as f:
                self.assertIn('Received signal 15, terminating.', f.read())
        with open(self.path('var', 'zdaemon.log')) as f:
            self.assertRegex(f.read(), r'pid \d+: exit status 0\n')

    def test_a_runner_that_reached_a_limit_is_started_again(self):
        # Exit status 75 is not in exit-codes.
        self.write('zdaemon.conf', self.here(
            readme_block('<runner>', howto('zdaemon'))).replace(
            '-C {0}/zope.conf'.format(self.dir),
            '-C {0}/zope.conf --max-ticks 3'.format(self.dir)))
        with open(self.path('zdaemon.conf')) as f:
            self.assertIn('--max-ticks 3', f.read())
        self.assertEqual(0, self.step('start'))
        log = self.wait_for(self.path('var', 'zdaemon.log'),
                            r'(spawned process pid=\d+(.|\n)*){2}')
        self.assertRegex(log, r'pid \d+: exit status 75\n')
        self.wait_for(self.path('var', 'myapp-runner.log'), r'^count 6$')


class SystemdTest(DeploymentTest):

    def setUp(self):
        super().setUp()
        self.unit = configparser.ConfigParser(interpolation=None)
        self.unit.optionxform = str
        self.unit.read_string(self.here(
            readme_block('[Unit]', howto('systemd'))))
        self.service = self.unit['Service']

    def test_the_unit(self):
        self.assertEqual('notify', self.service['Type'])
        self.assertEqual('SIGTERM', self.service['KillSignal'])
        self.assertEqual('on-failure', self.service['Restart'])
        self.assertGreater(int(self.service['WatchdogSec']), 0)
        self.assertGreater(int(self.service['TimeoutStopSec']), 0)
        self.assertEqual(
            f'{self.dir}/bin/myapp-runner -C {self.dir}/zope.conf',
            self.service['ExecStart'])

    def test_systemd_analyze_verify(self):
        if shutil.which('systemd-analyze') is None:
            self.skipTest('systemd-analyze is not installed')
        path = self.write(
            'myapp-runner.service',
            self.here(readme_block('[Unit]', howto('systemd'))))
        result = subprocess.run(
            ['systemd-analyze', 'verify', path], capture_output=True,
            text=True, timeout=60)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual('', result.stderr)

    def test_ExecStart_notifies_systemd(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(self.path('notify'))
        sock.settimeout(60)
        # As systemd starts the service (WATCHDOG_PID is left out: it
        # cannot be known before the process is).
        env = dict(
            os.environ, NOTIFY_SOCKET=self.path('notify'),
            WATCHDOG_USEC=str(int(self.service['WatchdogSec']) * 10**6))
        proc = subprocess.Popen(
            shlex.split(self.service['ExecStart']),
            cwd=self.service['WorkingDirectory'], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.addCleanup(proc.stdout.close)
        self.addCleanup(proc.kill)
        states = []
        while states.count('WATCHDOG=1') < 3:
            states.extend(sock.recv(4096).decode().splitlines())
        proc.send_signal(getattr(signal, self.service['KillSignal']))
        while states[-1] != 'STOPPING=1':
            states.extend(sock.recv(4096).decode().splitlines())
        self.assertEqual(0, proc.wait(timeout=60))
        self.assertEqual('READY=1', states[0])
        self.assertEqual({'READY=1', 'WATCHDOG=1', 'STOPPING=1'}, set(states))
        self.assertEqual(1, states.count('READY=1'))
        self.assertLastTickCommitted(proc.stdout.read())


def cron(command, cwd, pythonpath=(), **kw):
    """Start the crontab line's `command` as cron does."""
    env = {'PATH': '/usr/bin:/bin', 'HOME': cwd, 'LOGNAME': 'myapp',
           'SHELL': '/bin/sh'}
    # As if installed: the tests' own modules; under buildout's bin/test
    # the eggs reach the scripts this way.
    path = list(pythonpath)
    if 'PYTHONPATH' in os.environ:
        path.append(os.environ['PYTHONPATH'])
    if path:
        env['PYTHONPATH'] = os.pathsep.join(path)
    return subprocess.Popen(
        ['/bin/sh', '-c', command], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


class CronTest(DeploymentTest):

    def setUp(self):
        super().setUp()
        line = readme_block(f'*/5 * * * * {PREFIX}/bin/myjob', howto('cron'))
        self.command = self.here(line.split(' * * * * ', 1)[1].strip())
        self.lock_file = self.path('var', 'myjob.lock')
        self.assertIn(f'--lock-file {self.lock_file}', self.command)
        self.assertIn(f'-C {self.dir}/cron.conf', self.command)
        # The guide's cron.conf, with absolute paths from %define.
        cron_conf = self.here(readme_block(
            f'%define INSTANCE {PREFIX}', howto('cron')))
        self.assertIn('$INSTANCE/var/Data.fs', cron_conf)
        self.write('cron.conf', cron_conf)
        os.mkdir(self.path('etc'))
        shutil.copy(os.path.join(HERE, 'ftesting.zcml'),
                    self.path('etc', 'site.zcml'))

    def cron(self):
        return cron(self.command, self.dir)

    def wait_for_holding(self, process):
        """The pid the worker of `process` wrote into ./holding."""
        deadline = time.monotonic() + 60
        while not os.path.exists(self.path('holding')):
            if process.poll() is not None:
                self.fail(process.stderr.read())
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.01)
        with open(self.path('holding')) as f:
            return f.read()

    def test_overlapping_runs(self):
        # The first run waits in its tick while ./hold exists.
        self.write('hold', '')
        first = self.cron()
        self.addCleanup(first.stderr.close)
        self.addCleanup(first.stdout.close)
        self.addCleanup(first.kill)
        pid = self.wait_for_holding(first)

        second = self.cron()
        stdout, stderr = second.communicate(timeout=60)
        self.assertEqual(75, second.returncode, stderr)
        self.assertEqual(
            self.here(readme_block('myjob: Another run holds the lock file',
                                   howto('cron'))).replace('4242', pid),
            stderr)
        self.assertEqual('', stdout)

        os.remove(self.path('hold'))
        self.assertEqual(0, first.wait(timeout=60))
        # Nothing for cron to mail: stdout is discarded.
        self.assertEqual('', first.stdout.read())
        self.assertEqual('', first.stderr.read())
        self.assertEqual(1, self.count())

        # The lock is free again: the next run counts.
        third = self.cron()
        stdout, stderr = third.communicate(timeout=60)
        self.assertEqual(0, third.returncode, stderr)
        self.assertEqual(2, self.count())

    def test_a_failing_run_mails_its_error(self):
        self.write('fail', '')
        run = self.cron()
        stdout, stderr = run.communicate(timeout=60)
        self.assertEqual(1, run.returncode, stderr)
        self.assertEqual('', stdout)
        expected = readme_block('ERROR gocept.runner.runner', howto('cron'))
        first, traceback, dots = expected.splitlines()
        self.assertEqual('...', dots)
        lines = stderr.splitlines()
        self.assertRegex(lines[0], '^' + '.*'.join(
            map(re.escape, first.split('...'))) + '$')
        self.assertEqual(traceback, lines[1])
        self.assertEqual('ValueError: the worker failed', lines[-1])
        self.assertIsNone(self.count())
        # The log file has it too.
        with open(self.path('var', 'myjob.log')) as f:
            self.assertIn('ERROR gocept.runner.runner Error in worker',
                          f.read())

    def test_a_fine_run_mails_nothing(self):
        run = self.cron()
        stdout, stderr = run.communicate(timeout=60)
        self.assertEqual(0, run.returncode, stderr)
        self.assertEqual(('', ''), (stdout, stderr))
        self.assertEqual(1, self.count())


class CommandLineTest(unittest.TestCase):
    """The guide to console scripts: the cleanup job, its site ZCML and
    zope.conf, in /srv/app, run by its crontab line."""

    layer = testing.DocsLayer

    def setUp(self):
        if not os.path.isdir(HOWTO):
            self.skipTest('docs/ is not beside the package (no checkout)')
        guide = howto('console-scripts')
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        for directory in ('bin', 'etc', 'var', 'mypackage'):
            os.mkdir(os.path.join(self.dir, directory))
        self.jobs = readme_block('import gocept.runner', guide)
        self.write('mypackage/jobs.py', self.jobs)
        self.write('etc/site.zcml', readme_block(
            '<configure xmlns="http://namespaces.zope.org/zope">', guide))
        self.write('etc/zope.conf', readme_block(
            'site-definition etc/site.zcml', guide))
        self.write('bin/cleanup', WRAPPER.format(
            python=sys.executable, module='mypackage.jobs', name='cleanup'))
        os.chmod(os.path.join(self.dir, 'bin', 'cleanup'), 0o755)
        line = readme_block('*/5 * * * * cd /srv/app', guide)
        self.command = line.split(' * * * * ', 1)[1].strip().replace(
            '/srv/app', self.dir)

    def write(self, name, text):
        with open(os.path.join(self.dir, name), 'w') as f:
            f.write(text)

    def cron(self):
        process = cron(self.command, self.dir, pythonpath=[self.dir])
        stdout, stderr = process.communicate(timeout=60)
        return process.returncode, stdout, stderr

    def test_the_example_runs_as_written(self):
        # As zope.mgr, whom etc/site.zcml defines: the minimal site does
        # not.
        self.assertEqual((0, '', ''), self.cron())
        with open(os.path.join(self.dir, 'var', 'cleanup.log')) as f:
            self.assertEqual('', f.read())

    def test_without_the_principal(self):
        site = readme_block(
            '<configure xmlns="http://namespaces.zope.org/zope">',
            howto('console-scripts'))
        self.assertIn('<principal id="zope.mgr"', site)
        self.write('etc/site.zcml', re.sub(r'<principal .*?/>', '', site,
                                           flags=re.DOTALL))
        self.assertEqual((2, '', "cleanup: Unknown principal 'zope.mgr'\n"),
                         self.cron())

    def test_a_failure_is_on_stderr(self):
        self.assertIn('\n    ...\n', self.jobs)
        self.write('mypackage/jobs.py', self.jobs.replace(
            '\n    ...\n', '\n    raise ValueError("expired")\n'))
        status, stdout, stderr = self.cron()
        self.assertEqual((1, ''), (status, stdout))
        self.assertEqual(
            'ERROR gocept.runner.runner Error in worker cleanup, transaction'
            ' aborted', stderr.splitlines()[0])
        self.assertEqual('ValueError: expired', stderr.splitlines()[-1])
