"""One worker in a host's thread, or in the main thread, in one process.

Arguments: zope.conf, ``empty`` or ``writing``, COUNT, RUNS.  Sets zope.conf
up once, then RUNS times runs COUNT ticks of one worker in two ways, in
turn (which first alternating): as the single runner does (a MainLoop in the
main thread, on the root folder of the set-up's connection), and as a
process of several loops runs each (gocept.runner.process.Process, in a
thread of its own: its own connection, the main thread waiting).  Reports
the seconds from the first tick to the last of every run, in order: the
harness takes the best of each (hardly touched by other work on the
machine, which only ever slows a run) and the ratios of neighbouring runs.
"""

import sys
import threading

import gocept.runner
from gocept.runner import environment
from gocept.runner.assembly import Worker
from gocept.runner.process import Process

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


def as_single(root, db):
    gocept.runner.MainLoop(root, 0, timed_worker(runs_seconds['single']))()


def as_host(root, db):
    loop = Worker(timed_worker(runs_seconds['host']), ticks=0).make_loop(root)
    process = Process([loop])
    thread = threading.Thread(target=process._run_in_thread, args=(loop, db))
    thread.start()
    thread.join()
    if loop.stopped_because != 'Exit':
        sys.exit('The host worker did not end by Exit')


runs_seconds = {'single': [], 'host': []}
with environment.application(zope_conf) as root:
    db = root._p_jar.db()
    for i in range(runs):
        # Which goes first alternates.
        for run in (as_single, as_host) if i % 2 else (as_host, as_single):
            run(root, db)
benchlib.report(ticks=count - 1, **runs_seconds)
