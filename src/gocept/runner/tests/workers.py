"""Workers that the tests of the command line run in subprocesses."""

import os
import sys
import time

import zope.component.hooks

import gocept.runner


def count():
    """Count the ticks in the database and print the count."""
    root = zope.component.hooks.getSite()._p_jar.root()
    root['count'] = root.get('count', 0) + 1
    print('count', root['count'], flush=True)


def fail():
    raise ValueError('the worker failed')


def exit_3():
    raise SystemExit(3)


not_callable = 42


@gocept.runner.appmain(ticks=0.01)
def count_to_3():
    """Count to three in the database, then stop.

    A decorated worker, run as a program.
    """
    count()
    root = zope.component.hooks.getSite()._p_jar.root()
    if root['count'] % 3 == 0:
        return gocept.runner.Exit


@gocept.runner.appmain(ticks=0.01, max_runtime=0)
def no_time():
    """Count, if its max_runtime gives it the time."""
    count()


@gocept.runner.appmain(ticks=3600)
def wait():
    """Say so, then sleep an hour between ticks."""
    print('waiting', flush=True)


@gocept.runner.once(lock_file='once.lock')
def once_locked():
    """Count once, holding ./once.lock."""
    count()


@gocept.runner.once()
def once_failing():
    """Fail once."""
    print('failing', file=sys.stdout, flush=True)
    fail()


@gocept.runner.appmain(ticks=0.05)
def count_on():
    """Count the ticks in the database until stopped."""
    count()


@gocept.runner.once()
def count_held():
    """Write the pid into ./holding, wait while ./hold exists, then count
    once; fail instead if ./fail exists."""
    with open('holding.tmp', 'w') as f:
        f.write(str(os.getpid()))
    os.rename('holding.tmp', 'holding')
    deadline = time.monotonic() + 60
    while os.path.exists('hold') and time.monotonic() < deadline:
        time.sleep(0.01)
    if os.path.exists('fail'):
        fail()
    count()


def batch(parser):
    parser.add_argument('--batch', type=int, default=100, metavar='N')


@gocept.runner.once(arguments=batch)
def print_batch(arguments):
    """Print the batch size it is given."""
    print('batch', arguments.batch)
