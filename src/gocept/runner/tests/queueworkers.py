"""Runners that drain a gocept.runner.queue.Queue, as processes of their
own::

    python -m gocept.runner.tests.queueworkers fill ZOPE_CONF JOBS NAME...
    python -m gocept.runner.tests.queueworkers drain ZOPE_CONF NAME DIRECTORY

`fill` queues the jobs 0 to JOBS-1 and makes a record of done jobs for each
runner NAME.  A `drain` runner takes a job per tick and counts it in its own
record (so that runners never conflict over their records, and a job done
twice shows); it waits for the file ``go`` in DIRECTORY before its first
take, and when the queue is empty writes NAME.json there: its worker calls
that took a job, and the jobs it has done.  The data are in the ZODB root,
for the test to read with a client of its own.
"""

import json
import os
import sys
import time

import BTrees.LLBTree
import BTrees.OOBTree
import zope.component.hooks

import gocept.runner
from gocept.runner.queue import Queue


def root():
    return zope.component.hooks.getSite()._p_jar.root()


def fill(zope_conf, jobs, *names):
    @gocept.runner.once()
    def fill():
        data = root()
        data['queue'] = Queue()
        for number in range(int(jobs)):
            data['queue'].put(number)
        data['done'] = BTrees.OOBTree.OOBTree(
            {name: BTrees.LLBTree.LLBTree() for name in names})
    fill(None, zope_conf)


def drain(zope_conf, name, directory):
    go = os.path.join(directory, 'go')
    calls = []

    @gocept.runner.appmain(ticks=0)
    def drain():
        if not os.path.exists(go):
            open(os.path.join(directory, f'ready-{name}'), 'w').close()
            while not os.path.exists(go):
                time.sleep(0.005)
        data = root()
        job = data['queue'].take()
        if job is None and data['queue']:
            return 0.01  # none to take now: look again soon
        if job is None:
            done = data['done'][name]
            with open(os.path.join(directory, f'{name}.json'), 'w') as f:
                json.dump({'calls': len(calls),
                           'done': sum(done.values())}, f)
            return gocept.runner.Exit
        calls.append(job)
        done = data['done'][name]
        done[job] = done.get(job, 0) + 1
        return 0
    drain(None, zope_conf)


WORKERS = {'fill': fill, 'drain': drain}


if __name__ == '__main__':
    WORKERS[sys.argv[1]](*sys.argv[2:])
