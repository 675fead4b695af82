"""Make the template database in the working directory: the root folder
(through DatabaseOpened) and the objects the workers use."""

import sys

import transaction
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping

import benchlib


db = benchlib.open_floor(sys.argv[1])
connection = db.open()
root = connection.root()
assert 'Application' in root
root['bench'] = PersistentMapping(n=0)
root['items'] = OOBTree()
root['objects'] = OOBTree()
transaction.commit()
connection.close()
db.close()
benchlib.report(prepared=True)
