"""One worker in a host's thread, or in the main thread, in one process.

Arguments: zope.conf, ``empty`` or ``writing``, COUNT, RUNS.  Sets zope.conf
up once, then RUNS times in turn runs COUNT ticks of one worker: as the
single runner does (a MainLoop in the main thread, on the root folder of
the set-up's connection), and as a Host does (Host._work in a thread of its
own: its own connection, the host's middleware, the main thread waiting).
Reports the fewest seconds from the first tick to the last of each: the
best of many short runs is hardly touched by other work on the machine,
which only ever slows a run.
"""

import sys
import threading

import gocept.runner
from gocept.runner import environment
from gocept.runner.host import Host
from gocept.runner.host import Worker

import benchlib


zope_conf, kind, count, runs = sys.argv[1:5]
count, runs = int(count), int(runs)


def timed_worker(seconds):
    done = 0
    start = counter = None

    def worker():
        nonlocal done, start, counter
        done += 1
        if done == 1:
            counter = benchlib.db_root()['counters']['w0']
            start = benchlib.now()
        if kind == 'writing':
            counter['n'] += 1
        if done == count:
            seconds.append(benchlib.now() - start)
            return gocept.runner.Exit
    return worker


best = {'single': float('inf'), 'host': float('inf')}
with environment.application(zope_conf) as root:
    db = root._p_jar.db()
    for i in range(runs):
        seconds = []
        gocept.runner.MainLoop(root, 0, timed_worker(seconds))()
        best['single'] = min(best['single'], *seconds)
        seconds = []
        host = Host([Worker(timed_worker(seconds), ticks=0)])
        thread = threading.Thread(target=host._work,
                                  args=(host.workers[0], db))
        thread.start()
        thread.join()
        if host.workers[0].loop.stopped_because != 'Exit':
            sys.exit('The host worker did not end by Exit')
        best['host'] = min(best['host'], *seconds)
benchlib.report(ticks=count - 1, **best)
