"""Workers that the RelStorage tests run in subprocesses."""

import os
import time

import zope.component.hooks


def started():
    """Say that the runner started, on its site (the root folder)."""
    site = zope.component.hooks.getSite()
    print('started on', type(site).__name__, flush=True)


def read_after_hold():
    """Count in the database; while the file ``hold`` exists, first say so
    in the file ``holding`` and wait, then read the count afresh."""
    root = zope.component.hooks.getSite()._p_jar.root()
    if os.path.exists('hold'):
        open('holding', 'w').close()
        while os.path.exists('hold'):
            time.sleep(0.01)
        # The next read loads from the database (with RelStorage's own
        # cache off).
        root._p_jar.cacheMinimize()
    root['count'] = root.get('count', 0) + 1
    print('count', root['count'], flush=True)
