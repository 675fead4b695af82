"""Ticks with or without metrics served: COUNT empty or writing ticks.

Arguments: zope.conf, ``empty`` or ``writing``, COUNT, and the port to
serve metrics on (``-`` for none).  Reports the seconds and the CPU
seconds (of all its threads: the scrapes count) of COUNT - 1 ticks.
"""

import sys
import time

import gocept.runner

import benchlib


zope_conf, kind, count, port = sys.argv[1:5]
count = int(count)
done = 0
start = cpu = bench = None


@gocept.runner.appmain(ticks=0, metrics=None if port == '-' else port)
def worker():
    global done, start, cpu, bench
    if start is None:
        bench = benchlib.db_root()['bench']
        start = benchlib.now()
        cpu = time.process_time()
    if kind == 'writing':
        bench['n'] += 1
    done += 1
    if done == count:
        benchlib.report(ticks=done - 1, seconds=benchlib.now() - start,
                        cpu=time.process_time() - cpu)
        return gocept.runner.Exit


worker(None, zope_conf)
benchlib.report(done=done)
