"""The same runner without and with integrations, in turn, in one process.

Arguments: zope.conf, ``empty`` or ``writing``, ROUNDS, SECONDS, and a JSON
object of the runs of a round: each run's name and the environment
variables that configure it (``{"without": {}, "sentry": {"SENTRY_DSN":
"..."}}``).
Runs the runner (appmain, its whole set-up and loop) so ROUNDS times, in
turn (the order rotating from round to round), each run ticking for 1 +
SECONDS seconds with its variables set (and no others of the runs').
Reports, for each run, the ticks of each second after its first, its CPU
seconds (of all the runner's threads) and its seconds.

An SDK initialised by one run stays so in the process (sentry-sdk's
patches of the standard library cannot be undone), but a run without its
variables reports nothing: what differs is what a run does per tick.
"""

import json
import os
import sys
import time

import gocept.runner

import benchlib


zope_conf, kind, rounds, seconds, runs = sys.argv[1:]
rounds, seconds, runs = int(rounds), int(seconds), json.loads(runs)
measured = {name: [] for name in runs}
variables = {name for env in runs.values() for name in env}


def runner(name):
    """A runner ticking for 1 + SECONDS seconds, measuring each second into
    measured[name]."""
    done = 0
    bench = None
    # When the running second began, the CPU seconds and the ticks by then.
    second = None
    run = []

    @gocept.runner.appmain(ticks=0)
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
        for variable in variables:
            os.environ.pop(variable, None)
        os.environ.update(runs[name])
        worker(None, zope_conf)
    return start


starts = [runner(name) for name in runs]
for i in range(rounds):
    for start in starts[i % len(starts):] + starts[:i % len(starts)]:
        start()
benchlib.report(**measured)
