"""The runner benchmarks/zeo.py starts, under gocept.runner 3.0 or this one.

    python zeo_worker.py setup ZOPE_CONF NAME...
    python zeo_worker.py count ZOPE_CONF NAME DIRECTORY

It uses only what both versions offer: appmain, once, Exit and the site.
"""

import json
import os
import sys
import time

import BTrees.OOBTree
import persistent.mapping
import zope.component.hooks

import gocept.runner


def data():
    return zope.component.hooks.getSite()._p_jar.root()


def setup(zope_conf, *names):
    """A shared counter and one count per runner, all plain integers."""
    @gocept.runner.once()
    def setup():
        data()['shared'] = persistent.mapping.PersistentMapping(value=0)
        data()['counts'] = BTrees.OOBTree.OOBTree({
            name: persistent.mapping.PersistentMapping(value=0)
            for name in names})
    setup(None, zope_conf)


def count(zope_conf, name, directory):
    """Increment the shared counter and our count on every tick.

    The first tick announces the runner (file ready-`name`) and waits for
    the file ``go``, which holds the time to stop at.  The last tick writes
    `name`.json: the ticks that tried to commit and the commits that made it.
    """
    state = {'end': None, 'ticks': 0}
    go = os.path.join(directory, 'go')

    @gocept.runner.appmain(ticks=0)
    def count():
        if state['end'] is None:
            open(os.path.join(directory, f'ready-{name}'), 'w').close()
            while not os.path.exists(go):
                time.sleep(0.005)
            with open(go) as f:
                state['end'] = float(f.read())
            return 0
        if time.time() >= state['end']:
            committed = data()['counts'][name]['value']
            with open(os.path.join(directory, f'{name}.json'), 'w') as f:
                json.dump({'ticks': state['ticks'], 'commits': committed,
                           'shared': data()['shared']['value']}, f)
            return gocept.runner.Exit
        state['ticks'] += 1
        data()['shared']['value'] += 1
        data()['counts'][name]['value'] += 1
    count(None, zope_conf)


if __name__ == '__main__':
    {'setup': setup, 'count': count}[sys.argv[1]](*sys.argv[2:])
