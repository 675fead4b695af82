"""The same runner without and with metrics served, in turn, in one process.

Arguments: zope.conf, ``empty`` or ``writing``, ROUNDS, SECONDS, the port to
serve metrics on, and the runs of a round: ``without`` metrics, ``with``
them.
Runs the runner (appmain, its whole set-up and loop) so ROUNDS times, in
turn (the order rotating from round to round), each run ticking for 1 +
SECONDS seconds.  Reports, for each run, the ticks of each second after its
first, its CPU seconds (of all the runner's threads: the scrapes count)
and its seconds.  One process for all: what differs from process to
process (where its memory lies, on which core it runs) hits all alike.
"""

import sys
import time

import gocept.runner
import gocept.runner.metrics

import benchlib


zope_conf, kind, rounds, seconds, port, *runs = sys.argv[1:]
rounds, seconds = int(rounds), int(seconds)
measured = {name: [] for name in runs}


def runner(name):
    """A runner ticking for 1 + SECONDS seconds, measuring each second into
    measured[name]."""
    done = 0
    bench = None
    # When the running second began, the CPU seconds and the ticks by then.
    second = None
    run = []

    @gocept.runner.appmain(ticks=0, metrics=None if name == 'without'
                           else port)
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


starts = [runner(name) for name in runs]
for i in range(rounds):
    for start in starts[i % len(starts):] + starts[:i % len(starts)]:
        start()
benchlib.report(**measured)
