"""The same runner without and with metrics served, in turn, in one process.

Arguments: zope.conf, ``empty`` or ``writing``, ROUNDS, SECONDS and the port
to serve metrics on.  Runs the runner (appmain, its whole set-up and loop)
2 * ROUNDS times, without and with metrics in turn (the order alternating
from round to round), each run ticking for 1 + SECONDS seconds.  Reports,
for each second after a run's first, the ticks it ran, its CPU seconds (of
all the runner's threads: the scrapes count) and its seconds.  One process
for both: what differs from process to process (where its memory lies, on
which core it runs) hits both alike.
"""

import sys
import time

import gocept.runner

import benchlib


zope_conf, kind, rounds, seconds, port = sys.argv[1:6]
rounds, seconds = int(rounds), int(seconds)
measured = {'without': [], 'with': []}


def runner(metrics):
    """A runner ticking for 1 + SECONDS seconds, measuring each second into
    measured[name]."""
    name = 'without' if metrics is None else 'with'
    done = 0
    bench = None
    # When the running second began, the CPU seconds and the ticks by then.
    second = None
    run = []

    @gocept.runner.appmain(ticks=0, metrics=metrics)
    def worker():
        nonlocal done, bench, second
        if second is None:
            bench = benchlib.db_root()['bench']
            second = (benchlib.now(), time.process_time(), 0)
        if kind == 'writing':
            bench['n'] += 1
        done += 1
        now = benchlib.now()
        if now - second[0] >= 1:
            cpu = time.process_time()
            run.append((done - second[2], cpu - second[1], now - second[0]))
            second = (now, cpu, done)
            if len(run) > seconds:
                measured[name].extend(run[1:])  # the first warms up
                return gocept.runner.Exit

    def start():
        nonlocal done, second
        done, second = 0, None
        run.clear()
        worker(None, zope_conf)
    return start


without, served = runner(None), runner(port)
for i in range(rounds):
    for start in (without, served) if i % 2 == 0 else (served, without):
        start()
benchlib.report(**measured)
