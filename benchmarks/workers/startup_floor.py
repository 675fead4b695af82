"""Start-up floor: the hand-written minimum, then the tick's work, commit."""

import sys

import transaction

import benchlib


db = benchlib.open_floor(sys.argv[1])
connection = db.open()
benchlib.report(first_tick=benchlib.now())
connection.root()['bench']['n'] += 1
transaction.commit()
connection.close()
db.close()
