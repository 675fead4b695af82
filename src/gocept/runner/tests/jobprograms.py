"""Job functions, job workers as processes of their own, and a client of
their database for the tests of gocept.runner.jobs.

Run workers as ``python -m gocept.runner.tests.jobprograms ZOPE_CONF
[KEY=VALUE...]``: ``workers=N`` loops in threads (1: in the main thread),
``burst=1`` to end when no job is left, ``poll=SECONDS`` for the idle
workers' poll (gocept.runner.jobs.worker.POLL), ``sigint_after_take=1`` for
a SIGINT to the process as soon as the main thread's first take of a job
has committed (see SigintAfterTake), and the process settings of
gocept.runner.assembly.Run (``max_runtime=...``).  The exit status is the
process's (see gocept.runner.status).
"""

import contextlib
import os
import signal
import subprocess
import sys
import time

import BTrees.OOBTree
import persistent
import transaction
import ZODB
import ZODB.config
import zope.app.appsetup.bootstrap
import zope.component.hooks
import zope.processlifetime
from ZODB.utils import p64
from ZODB.utils import u64

import gocept.runner
from gocept.runner import assembly
from gocept.runner import environment
from gocept.runner import jobs
from gocept.runner import status
from gocept.runner import testing
from gocept.runner.decorators import appmain
from gocept.runner.jobs import job
from gocept.runner.jobs import store
from gocept.runner.jobs import worker
from gocept.runner.tests import programs


MODULE = 'gocept.runner.tests.jobprograms'


class Counter(persistent.Persistent):
    """How often the job that got it as its argument ran to its commit."""

    count = 0


def root():
    return zope.component.hooks.getSite()._p_jar.root()


@job(retries=0)
def mark(counter):
    """Count a run in `counter` (a Counter of this job's own)."""
    counter.count += 1


@job(retries=0)
def slow_mark(counter, seconds=0.02):
    """Like `mark`, after `seconds` of work in Python."""
    spin(seconds)
    counter.count += 1


@job(retries=0)
def running_now(counter):
    """Note in `counter` the ids of the jobs that its database's workers
    run (as their records say), and count a run."""
    running = store.jobs_of(counter._p_jar).running()
    counter.running = sorted(job.id for job, _ in running)
    counter.count += 1


@job(retries=2, retry_pause=0.3)
def fail(token):
    """Raise, always."""
    raise ValueError(f'boom {token}')


@job(retries=1, retry_pause=0.1)
def mark_when_allowed(counter):
    """Count a run in `counter`; raise until it is allowed (see Client)."""
    if not getattr(counter, 'allowed', False):
        raise ValueError('not allowed yet')
    counter.count += 1


@job(retries=1, retry_pause=0.1)
def kill_process(counter):
    """Kill the worker process the job runs in (as the OOM killer would),
    after a change that must not be stored."""
    counter.count += 1
    transaction.savepoint()
    os.kill(os.getpid(), signal.SIGKILL)
    spin(30)


@job(retries=0, time_limit=0.5)
def run_away(counter):
    """Change `counter`, then compute for 30 seconds (in Python, so that
    the time limit reaches it)."""
    counter.count += 1
    spin(30)


@job(retries=0)
def long_run(counter):
    """Change `counter`, then compute for 30 seconds."""
    counter.count += 1
    spin(30)


@job(retries=0)
def nap(counter, seconds):
    """Sleep `seconds`, then count a run in `counter`."""
    time.sleep(seconds)
    counter.count += 1


@job(retries=0)
def spawn(counters, seconds, after=0):
    """After `after` seconds, put a job `nap` for each of `counters`."""
    time.sleep(after)
    for counter in counters:
        nap.delay(counter, seconds)


@job
def add(a, b=0):
    return a + b


@appmain(ticks=0.1)
def producer():
    """A runner's worker beside job workers in one process: once one of
    them has looked for jobs (and idles), put a job `mark` on the Counter
    ``root()['counter']``, and end."""
    container = store.jobs_of(root()._p_jar)
    if container is None or not any(
            process.workers for process in container.processes().values()):
        return None
    counter = root()['counter'] = Counter()
    mark.delay(counter)
    return gocept.runner.Exit


def not_a_job(counter):
    """A function of a job module that is not decorated."""
    counter.count += 1


def spin(seconds):
    """Work in Python for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def write_zope_conf(directory, zodb=None, extra=''):
    """Write zope.conf for workers into `directory` (DEBUG to the file
    ``output`` there); return its path."""
    return testing.write_zope_conf(
        directory, zodb=zodb,
        log=programs.LOG.format(level='DEBUG', log='STDOUT'),
        site_zcml=programs.MINIMAL_ZCML, extra=extra)


def start(directory, env=None, **settings):
    """Start a worker process on the zope.conf in `directory` (with the
    environment variables `env` added to the test's); return the Popen.
    Its output is appended to the file ``output`` there."""
    args = [sys.executable, '-m', MODULE,
            os.path.join(directory, 'zope.conf')]
    args.extend(f'{key}={value}' for key, value in settings.items())
    with open(os.path.join(directory, 'output'), 'ab') as output:
        return subprocess.Popen(args, stdout=output, stderr=output,
                                env=dict(os.environ, **(env or {})))


def output(directory):
    with open(os.path.join(directory, 'output')) as f:
        return f.read()


class Client:
    """A connection of the test to the database of the workers, with the
    root folder as its site (as a Zope request has)."""

    def __init__(self, db):
        self.db = db
        zope.app.appsetup.bootstrap.bootStrapSubscriber(
            zope.processlifetime.DatabaseOpened(db))
        self.connection = db.open()
        self.root = self.connection.root()
        zope.component.hooks.setSite(self.root['Application'])

    @classmethod
    def open(cls, storage):
        return cls(ZODB.DB(storage))

    def close(self):
        zope.component.hooks.setSite(None)
        transaction.abort()
        self.connection.close()
        self.db.close()

    def jobs(self):
        """The Jobs container (made if need be)."""
        return store.jobs_of(self.connection, create=True)

    def fresh(self):
        """The Jobs container, in a new transaction."""
        transaction.begin()
        return self.jobs()

    def set(self, **settings):
        """Store settings of the Jobs container (dead_after=1, say)."""
        container = self.fresh()
        for name, value in settings.items():
            setattr(container, name, value)
        transaction.commit()

    def counters(self, count, name='counters'):
        """`count` new Counters, kept in the root under `name`."""
        counters = self.root[name] = BTrees.OOBTree.OOBTree()
        for number in range(count):
            counters[number] = Counter()
        return list(counters.values())

    def counters_of(self, name='counters'):
        """The Counters kept under `name`, fresh."""
        transaction.begin()
        return list(self.root[name].values())

    def notes(self, since, job_ids):
        """The description of each transaction after the transaction id
        `since` that concerns one of `job_ids`, oldest first."""
        job_ids = set(job_ids)
        return [txn.description.decode()
                for txn in self.db.storage.iterator(p64(u64(since) + 1))
                if txn.extension.get('job_id') in job_ids]

    def record(self, job_id):
        """The record of the job `job_id`, fresh."""
        return self.fresh().get(job_id)

    def wait(self, condition, timeout=60, message=''):
        """Wait until `condition()` (called in a fresh transaction) is
        true; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            transaction.begin()
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f'Timed out after {timeout} s {message}')
            time.sleep(0.05)


@contextlib.contextmanager
def client(zodb_section):
    """A Client on the database of the ``<zodb>`` section `zodb_section`,
    closed at the end."""
    connected = Client(ZODB.config.databaseFromString(zodb_section))
    try:
        yield connected
    finally:
        connected.close()


def run(zope_conf, workers=1, burst=False, max_ticks=None, **settings):
    """Run `workers` job workers on `zope_conf` (each for `max_ticks`, if
    given); return the Process."""
    loop = {} if max_ticks is None else {'max_ticks': max_ticks}
    return assembly.run(jobs.workers(workers, burst=burst, **loop),
                        environment.application(zope_conf), **settings)


# What the process keeps for as long as it runs.
_kept = []


class SigintAfterTake(testing.Synchronizer):
    """A synchronizer of the main thread's transactions: when the first
    take of a job has committed, it sends the process SIGINT, which comes
    between the take and the job's call."""

    sent = False

    def afterCompletion(self, txn):
        if not self.sent and txn.status == transaction._transaction.Status.\
                COMMITTED and ': take job ' in txn.description:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


def main(argv):
    settings = dict(arg.split('=', 1) for arg in argv[1:])
    settings = {key: float(value) for key, value in settings.items()}
    settings['workers'] = int(settings.get('workers', 1))
    settings['burst'] = bool(settings.get('burst', 0))
    if 'max_ticks' in settings:
        settings['max_ticks'] = int(settings['max_ticks'])
    worker.POLL = settings.pop('poll', worker.POLL)
    if settings.pop('sigint_after_take', 0):
        # The transaction manager holds its synchronizers weakly.
        _kept.append(SigintAfterTake())
        transaction.manager.registerSynch(_kept[-1])
    process = run(argv[0], **settings)
    sys.exit(status.process_status(process))


if __name__ == '__main__':
    # The job functions are registered under this module's name, not
    # __main__'s.
    from gocept.runner.tests.jobprograms import main as main_of_module
    main_of_module(sys.argv[1:])
