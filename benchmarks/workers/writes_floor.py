"""Writing ticks floor: add one to the counter and commit, COUNT times."""

import sys

import transaction

import benchlib


zope_conf, count = sys.argv[1], int(sys.argv[2])
db = benchlib.open_floor(zope_conf)
connection = db.open()
bench = connection.root()['bench']
start = benchlib.now()
for i in range(count):
    bench['n'] += 1
    transaction.commit()
benchlib.report(ticks=count, seconds=benchlib.now() - start)
connection.close()
db.close()
