"""Ticks with and without metrics in one process, best of many short runs.

Arguments: ``empty`` or ``writing``, COUNT, RUNS.  Runs a MainLoop of COUNT
ticks on the database in ./Data.fs RUNS times without metrics and RUNS
times with them served on a free port of 127.0.0.1 (not scraped), in turn,
and reports the fewest CPU seconds of each.  The best of many runs is
hardly touched by other work on the machine, which only ever slows a run.
"""

import socket
import sys
import time

import ZODB

import gocept.runner
import gocept.runner.metrics

import benchlib


kind, count, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
db = ZODB.DB('Data.fs')
connection = db.open()
root = connection.root()
bench = root['bench']


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(middleware):
    """The CPU seconds from the first tick to the last."""
    done = 0
    cpu = None

    def worker():
        nonlocal done, cpu
        if kind == 'writing':
            bench['n'] += 1
        done += 1
        if done == 1:
            cpu = time.process_time()
        elif done == count:
            cpu = time.process_time() - cpu
            return gocept.runner.Exit
    gocept.runner.MainLoop(root, 0, worker, middleware=middleware)()
    return cpu


best = {'without': float('inf'), 'with': float('inf')}
for i in range(runs):
    best['without'] = min(best['without'], run([]))
    best['with'] = min(best['with'], run(
        [gocept.runner.metrics.Metrics(free_port())]))
benchlib.report(**best)
connection.close()
db.close()
