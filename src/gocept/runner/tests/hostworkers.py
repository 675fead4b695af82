"""Workers that test_host runs together in one process.

Each counts its ticks in the BTree ``counts`` of the database root and
prints ``NAME N`` once the tick's count is committed.
"""

import sys

import BTrees.OOBTree
import transaction
import zope.component.hooks

import gocept.runner


def _count(name):
    root = zope.component.hooks.getSite()._p_jar.root()
    if 'counts' not in root:
        root['counts'] = BTrees.OOBTree.OOBTree()
    counts = root['counts']
    counts[name] = counts.get(name, 0) + 1
    number = counts[name]
    transaction.get().addAfterCommitHook(
        lambda ok: ok and _say(f'{name} {number}'))
    return number


def _say(line):
    # One write: the threads of the other workers print, too.
    sys.stdout.write(f'{line}\n')
    sys.stdout.flush()


def index():
    _count('index')


def archive():
    _count('archive')


def cleanup():
    _count('cleanup')
    return 0.05


@gocept.runner.once()
def report():
    _count('report')


def failing():
    raise ValueError('failing fails')
