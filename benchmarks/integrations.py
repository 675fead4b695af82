#!/usr/bin/env python3
"""Benchmark: the cost of integrations (Sentry, ...) configured while a
runner ticks.

    .venv/bin/python benchmarks/integrations.py [--quick] [NAME ...]

Run it with a Python that has this checkout and the extras of the
integrations (``sentry``).  In PROCESSES processes each
(workers/integrations.py), the same runner ticks empty ticks, then writing
ticks, without any integration and with each of INTEGRATIONS (or those
NAMEd) configured, in turn, ROUNDS times each way, SECONDS seconds a run
(and one to warm up).  Each second gives the ticks per second and per CPU
second (all the runner's threads); the figures are the ratios, with the
integration to without, of the medians of all seconds, with their 95 %
intervals (as benchmarks/metrics.py has them), and "met" is judged on the
ratio per CPU second.  Writes benchmarks/integrations-results.txt
(--quick: to benchmarks/work/); the exit status is 1 if a run failed.

Another integration is a row more: a context manager that yields the
environment variables that configure it (starting what it reports to, on
127.0.0.1), and its goals, in INTEGRATIONS.
"""

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import timeit
import types

from metrics import rates
from metrics import ratio
from run import SITE_ZCML
from run import TMPFS
from run import WORK
from run import WORKERS
from run import ZOPE_CONF

from gocept.runner import runner
from gocept.runner import testing


HERE = os.path.dirname(os.path.abspath(__file__))
# Processes, rounds in each, seconds a run is measured (full, quick).
PROCESSES = (4, 1)
ROUNDS = (6, 2)
SECONDS = (4, 2)
KINDS = ('empty', 'writing')


@contextlib.contextmanager
def sentry():
    """Sentry configured by SENTRY_DSN, to a Sentry of our own on 127.0.0.1
    (gocept.runner.testing.SentryServer).  The ticks commit: it receives
    no event, which is checked."""
    with testing.SentryServer() as server:
        yield {'SENTRY_DSN': server.dsn}
        if server.items():
            sys.exit(f'Sentry received {server.items()!r}')


def sentry_hook():
    """The microseconds that the Reporter's hook on every tick
    (gocept.runner.sentry.Reporter.after_tick) takes for a committed
    tick: the best of 5 times 100,000 calls.  (Its SDK sends nothing: the
    DSN's port is closed.)"""
    # Imported here: only this row needs the sentry extra.
    from gocept.runner import sentry as sentry_
    reporter = sentry_.Reporter(
        {'dsn': f'http://key@127.0.0.1:{testing.free_port()}/1'})
    tick = runner.Tick(1)
    tick.outcome, tick.ended = 'committed', time.monotonic()
    loop = types.SimpleNamespace(once=False)
    best = min(timeit.repeat(lambda: reporter.after_tick(loop, tick),
                             number=100000, repeat=5))
    return best / 100000 * 1e6


# name -> (the context manager that yields the environment variables that
# configure the integration, {kind of tick: goal}, the function that
# measures its hook on every tick in µs).
INTEGRATIONS = {
    'sentry': (sentry, {'empty': 0.9, 'writing': 0.97}, sentry_hook),
}


def run_process(template, kind, rounds, seconds, runs):
    """The seconds of one process: {'without': [(ticks, CPU seconds,
    seconds)], NAME: [...], ...} (see workers/integrations.py)."""
    directory = tempfile.mkdtemp(dir=template.rsplit('/', 1)[0])
    try:
        for name in os.listdir(template):
            shutil.copy(os.path.join(template, name), directory)
        proc = subprocess.run(
            [sys.executable, os.path.join(WORKERS, 'integrations.py'),
             'zope.conf', kind, str(rounds), str(seconds), json.dumps(runs)],
            cwd=directory, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or 'Traceback' in proc.stderr:
            sys.exit(f'{kind} ticks failed ({proc.returncode}):\n'
                     + proc.stderr)
        measured = json.loads(proc.stdout.splitlines()[-1])
        for name in runs:
            if len(measured.get(name, ())) != rounds * seconds:
                sys.exit(f'{kind} ticks, {name}: measured'
                         f' {measured.get(name)}')
        return measured
    finally:
        shutil.rmtree(directory)


def prepare(base):
    template = os.path.join(base, 'template')
    os.mkdir(template)
    with open(os.path.join(template, 'zope.conf'), 'w') as f:
        f.write(ZOPE_CONF.format(site_zcml=SITE_ZCML).replace(
            'level INFO', 'level WARNING'))
    subprocess.run([sys.executable, os.path.join(WORKERS, 'prepare.py'),
                    'zope.conf'], cwd=template, check=True,
                   capture_output=True)
    return template


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run: fewer seconds and rounds')
    parser.add_argument('names', nargs='*', metavar='NAME',
                        choices=[[], *INTEGRATIONS],
                        help='the integrations to measure (default: all)')
    args = parser.parse_args()
    names = args.names or list(INTEGRATIONS)
    i = 1 if args.quick else 0
    processes, rounds, seconds = PROCESSES[i], ROUNDS[i], SECONDS[i]
    # Each run of a round in each place as often.
    rounds = max(rounds, len(names) + 1)
    began = time.monotonic()
    on_disk = not os.path.isdir(TMPFS)
    base = tempfile.mkdtemp(prefix='runner-integrations-',
                            dir=None if on_disk else TMPFS)
    rows = []
    try:
        template = prepare(base)
        with contextlib.ExitStack() as stack:
            runs = {'without': {}}
            for name in names:
                runs[name] = stack.enter_context(INTEGRATIONS[name][0]())
            for kind in KINDS:
                pooled = {name: [] for name in runs}
                for i in range(processes):
                    measured = run_process(template, kind, rounds, seconds,
                                           runs)
                    for name, run in measured.items():
                        pooled[name] += run
                        wall, cpu = rates(run)
                        print(f'{kind} ticks, {name}:'
                              f' {statistics.median(wall):,.0f} ticks/s,'
                              f' {statistics.median(cpu):,.0f} per CPU s'
                              f' (medians of {len(run)} s)', flush=True)
                plain_wall, plain_cpu = rates(pooled['without'])
                for name in names:
                    wall, cpu = rates(pooled[name])
                    rows.append((f'{kind} ticks, {name}',
                                 ratio(wall, plain_wall),
                                 ratio(cpu, plain_cpu),
                                 INTEGRATIONS[name][1][kind]))
        hooks = {name: INTEGRATIONS[name][2]() for name in names}
    finally:
        shutil.rmtree(base)
    lines = [
        'figure                 ticks/s  95 % interval  per CPU s'
        '  95 % interval  goal    met',
    ]
    for figure, wall, cpu, goal in rows:
        met = 'yes' if cpu[0] >= goal else 'NO'
        lines.append(
            f'{figure:<21}  {wall[0]:>7.3f}  {wall[1]:.3f}-{wall[2]:.3f}'
            f'    {cpu[0]:>9.3f}  {cpu[1]:.3f}-{cpu[2]:.3f}    ≥ {goal:.2f}'
            f'  {met:>4}')
    lines += [
        '',
        f'Ratios, with the integration to without, of the medians of the'
        f' ticks per second (wall clock) and per CPU second (all threads of'
        f' the runner) of {processes * rounds * seconds} seconds each way,'
        f' and their 95 % intervals (bootstrap).  {processes} processes'
        f' ran the runner (appmain: set-up and loop) without and with each'
        f' integration in turn, {rounds} times each way, {seconds} s a run'
        f' after one to warm up.  sentry: SENTRY_DSN set, to a Sentry on'
        f' 127.0.0.1 that received nothing (no tick failed).'
        f'  "met" is judged on the ratio per CPU second.',
        'The hook on every tick takes: ' + ', '.join(
            f'{name} {us:.2f} µs' for name, us in hooks.items()) + '.',
        'Database: FileStorage ' + ('on disk.' if on_disk else
                                    f'on a tmpfs ({TMPFS}).'),
        f'Python {platform.python_version()}, {os.cpu_count()} CPUs,'
        f' load average at the end'
        f' {" ".join(f"{x:.1f}" for x in os.getloadavg())};'
        f' whole run {time.monotonic() - began:.0f} s.',
    ]
    table = len(rows) + 1
    text = '\n'.join(lines[:table] + [
        textwrap.fill(line, 78) for line in lines[table:]]) + '\n'
    print('\n' + text)
    out = WORK if args.quick else HERE
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'integrations-results.txt'), 'w') as f:
        f.write(text)


if __name__ == '__main__':
    main()
