"""Signal latency floor: one commit, then wait up to TICKS seconds for
SIGTERM and close the database."""

import signal
import sys

import transaction

import benchlib


zope_conf, ticks = sys.argv[1], float(sys.argv[2])
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
db = benchlib.open_floor(zope_conf)
connection = db.open()
transaction.commit()
benchlib.report(tick=1)
signal.sigtimedwait({signal.SIGTERM}, ticks)
connection.close()
db.close()
