"""Signal latency: a runner with ``ticks=TICKS`` that the harness stops
with SIGTERM while it sleeps after its first tick."""

import sys

import gocept.runner

import benchlib


zope_conf, ticks = sys.argv[1], float(sys.argv[2])
done = 0


@gocept.runner.appmain(ticks=ticks)
def worker():
    global done
    done += 1
    benchlib.report(tick=done)


worker(None, zope_conf)
