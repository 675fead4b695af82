"""Runner programs the tests start as subprocesses, and their zope.conf.

Run one as ``python -m gocept.runner.tests.programs PROGRAM ZOPE_CONF
REPORT [KEY=VALUE...]``; the KEY=VALUE pairs are MainLoop options (numbers).
Each program appends lines to the file REPORT to tell the test what it did;
its exit status is the one of ``gocept.runner.cli.exit_status``.

The programs are workers of the gocept-runner command, too (see
`start_command`); then REPORT is the file $RUNNER_TEST_REPORT names.
"""

import os
import os.path
import signal
import subprocess
import sys
import time

import transaction
import zope.component.hooks

from gocept.runner import assembly
from gocept.runner import cli
from gocept.runner import testing


MINIMAL_ZCML = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), 'minimal.zcml')

MODULE = 'gocept.runner.tests.programs'

LOG = """\
<eventlog>
  level {level}
  <logfile>
    path {log}
    format %(levelname)s %(name)s %(message)s
  </logfile>
</eventlog>
"""


def write_zope_conf(directory, storage=None, level='INFO', log='STDOUT'):
    """Write a zope.conf for the minimal site into `directory`; return its
    path.

    The storage is a FileStorage `Data.fs` in `directory` unless `storage`
    gives the text of another storage section.
    """
    zodb = None if storage is None else f'<zodb>\n  {storage}\n</zodb>\n'
    return testing.write_zope_conf(
        directory, zodb=zodb, log=LOG.format(level=level, log=log),
        site_zcml=MINIMAL_ZCML)


CLIENT_STORAGE = """<clientstorage>
    server {address}
    wait-timeout 1
  </clientstorage>"""


def write_zeo_client_conf(directory, address, level='INFO'):
    """Write a zope.conf like `write_zope_conf`'s, on the ZEO server at
    `address`; return its path.

    <clientstorage> is ZEO's own section type (after ``%import ZEO``), with
    a wait-timeout: a tick waits a second for a server that is away.
    """
    conf = write_zope_conf(
        directory, CLIENT_STORAGE.format(address=address), level=level)
    with open(conf) as f:
        text = f.read()
    with open(conf, 'w') as f:
        f.write('%import ZEO\n' + text)
    return conf


def start(directory, program, env=None, **options):
    """Start `program` on the zope.conf in `directory`; return the Popen.

    Its report is the file ``report`` in `directory`, its output goes to
    the file ``output``.
    """
    args = [sys.executable, '-m', MODULE,
            program, os.path.join(directory, 'zope.conf'),
            os.path.join(directory, 'report')]
    args.extend(f'{key}={value}' for key, value in options.items())
    with open(os.path.join(directory, 'output'), 'ab') as output:
        return subprocess.Popen(args, stdout=output, stderr=output,
                                env=dict(os.environ, **(env or {})))


def start_command(directory, program, *args):
    """Start the gocept-runner command with `program` as its worker and
    `args` as further options; return the Popen.

    Like `start`: zope.conf, report and output are in `directory`.
    """
    command = [sys.executable, '-m', 'gocept.runner',
               '-C', os.path.join(directory, 'zope.conf'), *args,
               f'{MODULE}:{program}']
    env = dict(os.environ,
               RUNNER_TEST_REPORT=os.path.join(directory, 'report'))
    with open(os.path.join(directory, 'output'), 'ab') as output:
        return subprocess.Popen(command, stdout=output, stderr=output,
                                env=env)


def read_report(directory):
    """The lines the program in `directory` reported so far."""
    try:
        with open(os.path.join(directory, 'report')) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def wait_for(directory, line, timeout=30):
    """Wait until the program in `directory` reported `line`."""
    deadline = time.monotonic() + timeout
    while line not in read_report(directory):
        if time.monotonic() > deadline:
            raise AssertionError(
                f'No {line!r} in {read_report(directory)!r} after'
                f' {timeout} s')
        time.sleep(0.01)


def wait_for_output(read, text, timeout=30):
    """Wait until `text` is in what `read()` returns."""
    deadline = time.monotonic() + timeout
    while text not in read():
        if time.monotonic() > deadline:
            raise AssertionError(
                f'No {text!r} after {timeout} s in:\n{read()}')
        time.sleep(0.02)


# What a program logs when it meets a storage outage.
OUTAGE = 'WARNING gocept.runner.outage Storage unavailable'


REPORT = os.environ.get('RUNNER_TEST_REPORT')


def report(line):
    with open(REPORT, 'a') as f:
        f.write(f'{line}\n')


def root():
    return zope.component.hooks.getSite()._p_jar.root()


def count():
    """Add 1 to root['count'] each tick, with some ballast to write.

    Reports ``committing N`` before the commit and ``committed N`` after it
    (from hooks of the transaction), so a test knows which commit was in
    flight when the process died.
    """
    _count(ballast=20000)


def small():
    """Like `count`, with little to write: each commit is a few hundred
    bytes, which the storage's file buffers hold until the commit's end."""
    _count(ballast=200)


def _count(ballast):
    count = root()['count'] = root().get('count', 0) + 1
    root()['ballast'] = os.urandom(ballast)
    txn = transaction.get()
    txn.addBeforeCommitHook(report, (f'committing {count}',))
    txn.addAfterCommitHook(
        lambda ok: ok and report(f'committed {count}'))


def killed_in_commit():
    """Like `count`, but the process kills itself (SIGKILL) in the commit,
    once the storage has written the transaction and before it is marked
    committed."""
    count()
    transaction.get().join(KillAfterVote())


class KillAfterVote:
    """A data manager that kills its process after the storages voted."""

    transaction_manager = transaction.manager

    def sortKey(self):
        # After the ZODB connection's key, which starts with the path.
        return '~'

    def tpc_vote(self, txn):
        os.kill(os.getpid(), signal.SIGKILL)

    def abort(self, txn):
        pass

    tpc_begin = commit = tpc_finish = tpc_abort = abort


def sleepy():
    """Report a tick, then sleep for a long time within it (a slow tick)."""
    count = root()['count'] = root().get('count', 0) + 1
    report(f'sleeping in tick {count}')
    time.sleep(float(os.environ.get('SLEEPY_SECONDS', '30')))
    report(f'woke up in tick {count}')


PROGRAMS = {'count': count, 'small': small,
            'killed_in_commit': killed_in_commit, 'sleepy': sleepy}


if __name__ == '__main__':
    name, zope_conf, REPORT = sys.argv[1:4]
    options = dict(arg.split('=', 1) for arg in sys.argv[4:])
    ticks = float(options.pop('ticks', 1))
    options = {key: (value if key == 'heartbeat' else float(value))
               for key, value in options.items()}
    loop = assembly.run_worker(
        PROGRAMS[name], None, zope_conf, ticks=ticks, **options)
    report(f'stopped because {loop.stopped_because}')
    sys.exit(cli.exit_status(loop))
