"""Memory floor: COUNT transactions of benchlib.memory_tick on an open
connection; RSS after transaction MARK and after the last, and the peak."""

import random
import sys

import transaction

import benchlib


zope_conf, count, mark = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(6)
rss_mark = rss_end = None
db = benchlib.open_floor(zope_conf)
connection = db.open()
objects = connection.root()['objects']
for done in range(1, count + 1):
    transaction.begin()
    benchlib.memory_tick(objects, done - 1, rnd)
    # Measured where the runner's worker measures: before the commit.
    if done == mark:
        rss_mark = benchlib.rss_kb()
    if done == count:
        rss_end = benchlib.rss_kb()
    transaction.commit()
connection.close()
db.close()
benchlib.report(ticks=count, rss_mark=rss_mark, rss_end=rss_end,
                rss_peak=benchlib.rss_kb('VmHWM'))
