#!/usr/bin/env python3
"""Profile: where the time of an empty tick goes.

    .venv/bin/python benchmarks/profile_ticks.py [--ticks N] [--instructions]

Run it with a Python that has this checkout.  It sets up the lean site of
benchmarks/run.py on a copy of its template FileStorage (on a tmpfs) and,
in one process:

1. runs a single runner (the process and the loop that appmain assembles)
   for N empty ticks (``ticks=0``) under cProfile, and prints the
   functions with the most time of their own, and the calls per tick;
2. runs the loop, N ticks, and the floor of benchmarks/run.py in its worker
   (on the loop's connection), N times, in turn, REPEAT times each, for
   empty ticks (the floor: ``transaction.begin()`` and ``commit()``) and
   for writing ticks (the floor: a change and ``commit()``); the CPU time
   of a tick, the best of the runs, and the loop's speed as a part of the
   floor's;
3. times each part of a tick on its own in the running loop (its site
   set, its process's middleware in place): the CPU time of a call, the
   best of REPEAT runs of CALLS calls.  A part alone runs with warm
   caches, so the parts add up to less than the whole, but they say what
   costs what.

With --instructions it counts instead the instructions per tick of the
loop and of the floors (with valgrind's cachegrind: a run of 100 ticks
taken from one of 2,100), which no other work on the machine changes.
Nothing here is compared with 3.0: benchmarks/run.py does that.
"""

import argparse
import cProfile
import io
import logging
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
import timeit

import transaction
import zope.component.hooks
from run import SITE_ZCML
from run import TMPFS
from run import WORKERS
from run import ZOPE_CONF

import gocept.runner
import gocept.runner.assembly
import gocept.runner.middleware
import gocept.runner.retry
import gocept.runner.security
import gocept.runner.tick


CALLS = 20000
REPEAT = 5
# What --instructions counts: the loop's ticks or the floor's.
KINDS = {
    'empty ticks': ('loop', 'empty'),
    'floor: begin() and commit()': ('floor', 'empty'),
    'floor: commit() alone': ('floor', 'commit'),
    'writing ticks': ('loop', 'writing'),
    'floor: a change and commit()': ('floor', 'writing'),
}


def run_ticks(zope_conf, ticks, worker, **settings):
    """Run `worker` as a single runner with ``ticks=0``."""
    gocept.runner.assembly.run_worker(worker, None, zope_conf, ticks=0,
                                      **settings)


def profiled(zope_conf, ticks):
    """The cProfile statistics of `ticks` empty ticks of the loop."""
    profile = cProfile.Profile()
    done = 0

    def worker():
        nonlocal done
        done += 1
        if done == 1:
            profile.enable()
        elif done == ticks + 1:
            profile.disable()
            return gocept.runner.Exit

    run_ticks(zope_conf, ticks, worker)
    return pstats.Stats(profile)


def work(kind, ticks):
    """A worker that runs `ticks` ticks of the loop, or, if `kind` is a
    floor, the floor's ticks in its first tick; then it returns Exit."""
    where, what = kind
    done = 0
    bench = None

    def worker():
        nonlocal done, bench
        if bench is None:
            bench = zope.component.hooks.getSite()._p_jar.root()['bench']
        if where == 'floor':
            floor(what, bench, ticks)
            return gocept.runner.Exit
        if what == 'writing':
            bench['n'] += 1
        done += 1
        if done >= ticks:
            return gocept.runner.Exit
    return worker


def floor(what, bench, ticks):
    """The floor's `ticks` ticks: empty ones, commits alone, or writing
    ones."""
    if what == 'writing':
        for i in range(ticks):
            bench['n'] += 1
            transaction.commit()
    elif what == 'empty':
        for i in range(ticks):
            transaction.begin()
            transaction.commit()
    else:
        for i in range(ticks):
            transaction.commit()


def against_floor(zope_conf, ticks, what):
    """The CPU µs of a tick of the loop and of the floor's (the best of
    REPEAT runs of `ticks` each), in turn in one process."""
    loop, floor_ = [], []
    done = 0
    started = bench = None

    def worker():
        nonlocal done, started, bench
        if bench is None:
            bench = zope.component.hooks.getSite()._p_jar.root()['bench']
        if what == 'writing':
            bench['n'] += 1
        done += 1
        if done == 1:
            started = time.process_time()
        elif done == ticks + 1:
            loop.append(time.process_time() - started)
            began = time.process_time()
            floor(what, bench, ticks)
            floor_.append(time.process_time() - began)
            done = 0
            if len(floor_) == REPEAT:
                return gocept.runner.Exit

    run_ticks(zope_conf, ticks, worker)
    return min(loop) / ticks * 1e6, min(floor_) / ticks * 1e6


class Probe(gocept.runner.middleware.Middleware):
    """Times the parts of a tick in its loop (see `time_parts`)."""

    def __init__(self):
        self.parts = []

    def before_loop(self, loop):
        self.loop = loop

    def part(self, name, func):
        best = min(timeit.repeat(func, number=CALLS, repeat=REPEAT,
                                 timer=time.process_time))
        self.parts.append((name, best / CALLS * 1e6))

    def time_parts(self):
        """The worker of a once run: times the parts and returns."""
        loop, part = self.loop, self.part
        tick = gocept.runner.tick.Tick(1)
        tick.outcome, tick.ended = 'committed', tick.started
        security = gocept.runner.security

        def closure():
            return lambda: tick

        def no_security():
            security.begin(None)
            security.end()

        def nothing():
            pass

        part('floor: transaction.begin() and commit()',
             lambda: floor('empty', None, 1))
        part('transaction.commit() alone', transaction.commit)
        part('Tick(number)', lambda: gocept.runner.tick.Tick(1))
        part('a closure made', closure)
        part('a bound method made', lambda: loop.commit)
        part('retry.run of no-ops', lambda: gocept.runner.retry.run(
            nothing, begin=nothing, commit=nothing, abort=nothing,
            may_retry=nothing, failed=nothing))
        part('MainLoop.begin(), no new transaction', loop.begin)
        part('MainLoop.commit(), an empty transaction', loop.commit)
        part('security.begin(None) and end()', no_security)
        part('hooks.after_tick', lambda: loop._hooks.after_tick(loop, tick))
        part('MainLoop.sleep(0)', lambda: loop.sleep(0))
        part('log.isEnabledFor(DEBUG)',
             lambda: gocept.runner.tick.log.isEnabledFor(logging.DEBUG))
        part('os.getpid()', os.getpid)


def instructions(zope_conf, counted=(100, 2100)):
    """The instructions per tick of each of KINDS (cachegrind)."""
    if shutil.which('valgrind') is None:
        sys.exit('--instructions needs valgrind')
    result = {}
    for name, (where, what) in KINDS.items():
        counts = []
        for ticks in counted:
            proc = subprocess.run(
                ['valgrind', '--tool=cachegrind', '--cache-sim=no',
                 '--cachegrind-out-file=/dev/null', sys.executable,
                 __file__, '--count', where, what, str(ticks), zope_conf],
                env=dict(os.environ, PYTHONHASHSEED='0'),
                capture_output=True, text=True)
            match = re.search(r'I\s+refs:\s+([\d,]+)', proc.stderr)
            if proc.returncode != 0 or match is None:
                sys.exit(f'{name}: {proc.stderr[-2000:]}')
            counts.append(int(match.group(1).replace(',', '')))
        result[name] = (counts[1] - counts[0]) / (counted[1] - counted[0])
        print(f'{name:<30} {result[name]:>9,.0f} instructions a tick',
              flush=True)
    return result


def prepare(base):
    zope_conf = os.path.join(base, 'zope.conf')
    with open(zope_conf, 'w') as f:
        f.write(ZOPE_CONF.format(site_zcml=SITE_ZCML).replace(
            'level INFO', 'level WARNING'))
    subprocess.run([sys.executable, os.path.join(WORKERS, 'prepare.py'),
                    zope_conf], cwd=base, check=True, capture_output=True)
    return zope_conf


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--ticks', type=int, default=20000,
                        help='empty ticks a run (default: %(default)s)')
    parser.add_argument('--instructions', action='store_true',
                        help='count instructions with valgrind instead')
    parser.add_argument('--count', nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count:  # one run under valgrind (see instructions())
        where, what, ticks, zope_conf = args.count
        os.chdir(os.path.dirname(zope_conf))
        run_ticks(zope_conf, int(ticks), work((where, what), int(ticks)))
        return
    base = tempfile.mkdtemp(prefix='runner-profile-',
                            dir=TMPFS if os.path.isdir(TMPFS) else None)
    try:
        zope_conf = prepare(base)
        os.chdir(base)
        if args.instructions:
            counts = instructions(zope_conf)
            for kind, floor_ in (
                    ('empty ticks', 'floor: begin() and commit()'),
                    ('writing ticks', 'floor: a change and commit()')):
                print(f'{kind}: {counts[floor_] / counts[kind]:.3f}× the'
                      ' floor\'s speed by instructions')
            return
        stats = profiled(zope_conf, args.ticks)
        out = io.StringIO()
        stats.stream = out
        stats.sort_stats('tottime').print_stats(20)
        print(out.getvalue().strip())
        print(f'\n{stats.total_calls / args.ticks:.0f} calls a tick\n')
        for what, ticks in (('empty', args.ticks),
                            ('writing', args.ticks // 5)):
            loop, floor_ = against_floor(zope_conf, ticks, what)
            print(f'{what} ticks: the loop {loop:.2f} µs, the floor'
                  f' {floor_:.2f} µs of CPU: {floor_ / loop:.3f}× the'
                  ' floor\'s speed')
        probe = Probe()
        run_ticks(zope_conf, 1, probe.time_parts, once=True,
                  middleware=[probe])
        print()
        for name, us in probe.parts:
            print(f'{name:<45} {us:6.2f} µs')
    finally:
        shutil.rmtree(base)


if __name__ == '__main__':
    main()
