"""transaction_per_item: a ``once`` job storing COUNT items, one commit each.
"""

import functools
import sys

import gocept.runner

import benchlib


zope_conf, count = sys.argv[1], int(sys.argv[2])
tree = None


# No arguments: 3.0 passes none through.
@gocept.runner.transaction_per_item
def store():
    for i in range(count):
        yield functools.partial(tree.__setitem__, i, i)


@gocept.runner.once()
def worker():
    global tree
    tree = benchlib.db_root()['items']
    start = benchlib.now()
    store()
    benchlib.report(items=count, seconds=benchlib.now() - start)


worker(None, zope_conf)
