"""transaction_per_item floor: store COUNT items, commit after each."""

import sys

import transaction

import benchlib


zope_conf, count = sys.argv[1], int(sys.argv[2])
db = benchlib.open_floor(zope_conf)
connection = db.open()
tree = connection.root()['items']
start = benchlib.now()
for i in range(count):
    tree[i] = i
    transaction.commit()
benchlib.report(items=count, seconds=benchlib.now() - start)
connection.close()
db.close()
