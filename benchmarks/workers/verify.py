"""Report what the databases in the given directories hold.

For each directory: the counter, whether ``items`` holds exactly 0 .. N-1
mapped to themselves, and the number and key range of ``objects``.
"""

import os
import sys

import ZODB
import ZODB.FileStorage

import benchlib


for directory in sys.argv[1:]:
    storage = ZODB.FileStorage.FileStorage(
        os.path.join(directory, 'Data.fs'), read_only=True)
    db = ZODB.DB(storage)
    connection = db.open()
    root = connection.root()
    items = root['items']
    objects = root['objects']
    benchlib.report(
        directory=directory,
        n=root['bench']['n'],
        items=len(items),
        items_ok=list(items.items()) == [(i, i) for i in range(len(items))],
        objects=len(objects),
        objects_ok=(not objects
                    or (objects.minKey(), objects.maxKey())
                    == (0, len(objects) - 1)))
    connection.close()
    db.close()
