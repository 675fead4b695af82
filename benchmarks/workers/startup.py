"""Start-up: a ``once`` job that adds one to the counter.

Reports the moment its tick starts; the harness times the whole process too.
"""

import sys

import gocept.runner

import benchlib


@gocept.runner.once()
def worker():
    benchlib.report(first_tick=benchlib.now())
    benchlib.db_root()['bench']['n'] += 1


worker(None, sys.argv[1])
