"""Ticks with or without metrics served: empty or writing ticks for a while.

Arguments: zope.conf, ``empty`` or ``writing``, SEGMENTS, and the port to
serve metrics on (``-`` for none).  Ticks for 1 + SEGMENTS seconds and
reports, for each second after the first, the ticks it ran, its CPU
seconds (of all the runner's threads: the scrapes count) and its seconds.
"""

import sys
import time

import gocept.runner

import benchlib


zope_conf, kind, segments, port = sys.argv[1:5]
segments = int(segments)
done = 0
bench = None
# When the running second began, the CPU seconds and the ticks by then.
second = None
seconds = []


@gocept.runner.appmain(ticks=0, metrics=None if port == '-' else port)
def worker():
    global done, bench, second
    if second is None:
        bench = benchlib.db_root()['bench']
        second = (benchlib.now(), time.process_time(), 0)
    if kind == 'writing':
        bench['n'] += 1
    done += 1
    now = benchlib.now()
    if now - second[0] >= 1:
        cpu = time.process_time()
        seconds.append((done - second[2], cpu - second[1], now - second[0]))
        second = (now, cpu, done)
        if len(seconds) > segments:
            benchlib.report(seconds=seconds[1:])  # the first warms up
            return gocept.runner.Exit


worker(None, zope_conf)
benchlib.report(done=done)
