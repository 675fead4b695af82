"""Memory: COUNT ticks of benchlib.memory_tick (new objects, random reads);
RSS after tick MARK and after the last tick, and the peak."""

import random
import sys

import gocept.runner

import benchlib


zope_conf, count, mark = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(6)
done = 0
objects = rss_mark = rss_end = None


@gocept.runner.appmain(ticks=0)
def worker():
    global done, objects, rss_mark, rss_end
    if objects is None:
        objects = benchlib.db_root()['objects']
    benchlib.memory_tick(objects, done, rnd)
    done += 1
    if done == mark:
        rss_mark = benchlib.rss_kb()
    if done == count:
        rss_end = benchlib.rss_kb()
        return gocept.runner.Exit


worker(None, zope_conf)
benchlib.report(ticks=done, rss_mark=rss_mark, rss_end=rss_end,
                rss_peak=benchlib.rss_kb('VmHWM'))
