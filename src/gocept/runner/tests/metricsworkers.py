"""Workers whose metrics the tests read (run by the gocept-runner command).

Each writes lines to the file $RUNNER_TEST_REPORT (see programs.report).
"""

import os

import transaction
import zope.component.hooks

import gocept.runner
from gocept.runner.tests.programs import report


if os.environ.get('METRICS_CLIENT_TIMEOUT'):
    # The tests of clients that send nothing wait for the server's timeout:
    # a shorter one (the module is imported before the server starts).
    import gocept.runner.metrics
    gocept.runner.metrics.CLIENT_TIMEOUT = float(
        os.environ['METRICS_CLIENT_TIMEOUT'])


def root():
    return zope.component.hooks.getSite()._p_jar.root()


def count():
    root()['count'] = root().get('count', 0) + 1


def conflict():
    """Change root['count'] and have a second connection (with a
    transaction manager of its own, as another process would) commit a
    change of it first: the commit conflicts."""
    count()
    manager = transaction.TransactionManager()
    other = root()._p_jar.db().open(manager)
    try:
        other.root()['count'] = other.root().get('count', 0) + 100
        manager.commit()
    finally:
        other.close()


def fail():
    raise ValueError('failing on purpose')


# What the calls of `mixed` do, one after the other; a retry is a call.
PLAN = [
    count, count,  # ticks 1 and 2 commit
    fail,  # tick 3 fails
    conflict, conflict, conflict,  # tick 4 conflicts on every attempt
    conflict, count,  # tick 5 commits after one conflict
    fail,  # tick 6 fails
    count, count,  # ticks 7 and 8 commit; then the worker sleeps
]


def mixed():
    """Commit, fail and conflict as PLAN says; report ``done`` with its
    last call and sleep an hour."""
    PLAN.pop(0)()
    if not PLAN:
        report('done')
        return 3600
    return 0


# What the calls of `steady` do.  It writes nothing, so that it runs beside
# `mixed` or `job` in one process (see gocept.runner.host) without
# conflicting with them.
STEADY = [None, fail, None]


def steady():
    """Commit, fail and commit as STEADY says; report ``steady done`` with
    its last call and sleep an hour."""
    step = STEADY.pop(0)
    if not STEADY:
        report('steady done')
    if step is not None:
        step()
    return 3600 if not STEADY else 0


def success():
    count()
    report('succeeded')


def failure():
    fail()


def job():
    """Commit, or fail if $JOB_FAILS is set."""
    count()
    if os.environ.get('JOB_FAILS'):
        fail()


def doomed():
    """Count, then doom the transaction (it is aborted)."""
    count()
    transaction.doom()


@gocept.runner.transaction_per_item
def batch():
    """A batch of three items, each a `job`: all commit, or all fail if
    $JOB_FAILS is set."""
    for name in ('one', 'two', 'three'):
        yield name, job


@gocept.runner.transaction_per_item
def _items():
    yield 'one', count
    yield 'two', fail
    yield 'three', count
    yield 'four', conflict


def items():
    """A batch of four items: two commit, one fails, one conflicts."""
    _items()
    report('items done')
