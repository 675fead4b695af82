"""Writing ticks: add one to the counter and commit, COUNT ticks."""

import sys

import gocept.runner

import benchlib


zope_conf, count = sys.argv[1], int(sys.argv[2])
done = 0
start = bench = None


@gocept.runner.appmain(ticks=0)
def worker():
    global done, start, bench
    if bench is None:
        bench = benchlib.db_root()['bench']
        start = benchlib.now()
    bench['n'] += 1
    done += 1
    if done == count:
        benchlib.report(ticks=done - 1, seconds=benchlib.now() - start)
        return gocept.runner.Exit


worker(None, zope_conf)
