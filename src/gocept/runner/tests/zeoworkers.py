"""Runners the ZEO tests start as processes of their own::

    python -m gocept.runner.tests.zeoworkers WORKER ZOPE_CONF [ARGUMENT...]

They keep their data in the ZODB root (not the root folder), so that the
test process can check it with a plain ZEO client.
"""

import os
import sys
import time
import uuid

import BTrees.OOBTree
import persistent
import zope.component.hooks

import gocept.runner


class Counter(persistent.Persistent):
    """A plain integer in an object of its own: no conflict resolution."""

    value = 0


def root():
    return zope.component.hooks.getSite()._p_jar.root()


def setup(zope_conf, *names):
    """Create the shared counter and a count for each of `names`."""
    @gocept.runner.once()
    def setup():
        data = root()
        data['shared'] = Counter()
        data['counts'] = BTrees.OOBTree.OOBTree(
            {name: Counter() for name in names})
        data['tokens'] = BTrees.OOBTree.OOBTree()
        data['value'] = None
    setup(None, zope_conf)


def count(zope_conf, name, ticks, directory):
    """Commit `ticks` times: the shared counter, our count and a token.

    The first tick creates the file ready-`name` in `directory` and waits
    for a file named go there, so that all counters start together.
    """
    ticks = int(ticks)
    go = os.path.join(directory, 'go')

    @gocept.runner.appmain(ticks=0)
    def count():
        if not os.path.exists(go):
            open(os.path.join(directory, f'ready-{name}'), 'w').close()
            while not os.path.exists(go):
                time.sleep(0.01)
        data = root()
        mine = data['counts'][name]
        if mine.value >= ticks:
            return gocept.runner.Exit
        data['shared'].value += 1
        mine.value += 1
        data['tokens'][uuid.uuid4().hex] = name
    count(None, zope_conf)


def watch(zope_conf, path):
    """Append the value we see to the file at `path`, every 0.05 s."""
    @gocept.runner.appmain(ticks=0.05)
    def watch():
        with open(path, 'a') as f:
            f.write(f'{root()["value"]!r}\n')
    watch(None, zope_conf)


def set_value(zope_conf, value):
    """Set the value the watchers see."""
    @gocept.runner.once()
    def set_value():
        root()['value'] = value
    set_value(None, zope_conf)


WORKERS = {
    'setup': setup,
    'count': count,
    'watch': watch,
    'set': set_value,
}


if __name__ == '__main__':
    # Counter must be pickled as gocept.runner.tests.zeoworkers.Counter, not
    # as __main__.Counter, so we call the workers of the imported module.
    from gocept.runner.tests import zeoworkers
    zeoworkers.WORKERS[sys.argv[1]](*sys.argv[2:])
