#!/usr/bin/env python3
"""Benchmark: the cost of Prometheus metrics served while a runner ticks.

    .venv/bin/python benchmarks/metrics.py [--quick]

Run it with a Python that has this checkout and its ``metrics`` extra.  In
PROCESSES processes each (workers/metrics.py), the same runner ticks empty
ticks, then writing ticks, without metrics and with them served on a port
of 127.0.0.1 that this script scrapes every SCRAPE_INTERVAL seconds, in
turn, ROUNDS times each way, SECONDS seconds a run (and one to warm up).
Each second gives the ticks per second and per CPU second (all the
runner's threads: the scrapes count); the figures are the ratios, with
metrics to without, of the medians of all seconds, with their 95 %
intervals, and "met" is judged on the ratio per CPU second.
Writes benchmarks/metrics-results.txt (--quick: to benchmarks/work/); the
exit status is 1 if a run failed.
"""

import argparse
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import timeit
import types
import urllib.request

from run import SITE_ZCML
from run import TMPFS
from run import WORK
from run import WORKERS
from run import ZOPE_CONF


HERE = os.path.dirname(os.path.abspath(__file__))
# Seconds between two scrapes (Prometheus' default is 15 s: this is harder).
SCRAPE_INTERVAL = 1
# Processes, rounds in each, seconds a run is measured (full, quick).
# Rounds a multiple of 2 and 3: each run of a round in each place as often.
PROCESSES = (4, 1)
ROUNDS = (6, 3)
SECONDS = (4, 2)
# Draws of the bootstrap of a ratio's interval.
BOOTSTRAP = 2000
# figure -> (worker kind, goal, the runs of a round: without metrics, with
# them, with them and the server's thread sharing the runner's file
# descriptors).
FIGURES = {
    'empty ticks': ('empty', 0.85, ('without', 'with')),
    'writing ticks': ('writing', 0.97, ('without', 'with')),
}


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Scraper(threading.Thread):
    """Scrapes http://127.0.0.1:PORT/metrics until stopped; counts the
    scrapes that worked."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.url = f'http://127.0.0.1:{port}/metrics'
        self.stopped = threading.Event()
        self.scrapes = 0

    def run(self):
        while not self.stopped.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if b'gocept_runner_ticks_total' in response.read():
                        self.scrapes += 1
            except OSError:
                pass  # not serving now
            self.stopped.wait(SCRAPE_INTERVAL)


def run_process(template, kind, rounds, seconds, runs):
    """The seconds of one process: {'without': [(ticks, CPU seconds,
    seconds)], 'with': [...], ...} (see workers/metrics.py), and the
    number of scrapes."""
    directory = tempfile.mkdtemp(dir=template.rsplit('/', 1)[0])
    try:
        for name in os.listdir(template):
            shutil.copy(os.path.join(template, name), directory)
        port = free_port()
        scraper = Scraper(port)
        scraper.start()
        proc = subprocess.run(
            [sys.executable, os.path.join(WORKERS, 'metrics.py'),
             'zope.conf', kind, str(rounds), str(seconds), str(port),
             *runs],
            cwd=directory, capture_output=True, text=True, timeout=900)
        scraper.stopped.set()
        scraper.join()
        if proc.returncode != 0 or 'Traceback' in proc.stderr:
            sys.exit(f'{kind} ticks failed ({proc.returncode}):\n'
                     + proc.stderr)
        measured = json.loads(proc.stdout.splitlines()[-1])
        for name in runs:
            if len(measured.get(name, ())) != rounds * seconds:
                sys.exit(f'{kind} ticks {name} metrics: measured'
                         f' {measured.get(name)}')
        return measured, scraper.scrapes
    finally:
        shutil.rmtree(directory)


def rates(seconds):
    """The ticks per second and per CPU second of each of `seconds`."""
    return ([ticks / wall for ticks, cpu, wall in seconds],
            [ticks / cpu for ticks, cpu, wall in seconds])


def ratio(served, plain):
    """The ratio of the medians of `served` and `plain`, and its 95 %
    interval (bootstrap: the seconds drawn again at random, with a seed of
    its own, BOOTSTRAP times)."""
    draw = random.Random(1)
    ratios = sorted(
        statistics.median(draw.choices(served, k=len(served))) /
        statistics.median(draw.choices(plain, k=len(plain)))
        for i in range(BOOTSTRAP))
    return (statistics.median(served) / statistics.median(plain),
            ratios[int(BOOTSTRAP * 0.025)], ratios[int(BOOTSTRAP * 0.975)])


def hook_cost():
    """The microseconds that the metrics' hook on every tick
    (Measure.after_tick) takes for a committed tick: the best of 5 times
    100,000 calls."""
    from gocept.runner import metrics
    from gocept.runner import peritem
    from gocept.runner import runner
    measure = metrics.Measure(worker=hook_cost)
    tick = runner.Tick(1)
    tick.outcome, tick.ended = 'committed', time.monotonic()
    tick.items = peritem.Collector()
    loop = types.SimpleNamespace(once=False)  # what the hook reads of it
    best = min(timeit.repeat(lambda: measure.after_tick(loop, tick),
                             number=100000, repeat=5))
    return best / 100000 * 1e6


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
    args = parser.parse_args()
    i = 1 if args.quick else 0
    processes, rounds, seconds = PROCESSES[i], ROUNDS[i], SECONDS[i]
    began = time.monotonic()
    on_disk = not os.path.isdir(TMPFS)
    base = tempfile.mkdtemp(prefix='runner-metrics-',
                            dir=None if on_disk else TMPFS)
    rows = []
    scrapes = []
    # The CPU microseconds of a tick without metrics (median).
    tick_us = {}
    try:
        template = prepare(base)
        for figure, (kind, goal, runs) in FIGURES.items():
            pooled = {name: [] for name in runs}
            for i in range(processes):
                measured, scraped = run_process(template, kind, rounds,
                                                seconds, runs)
                scrapes.append(scraped)
                for name, run in measured.items():
                    pooled[name] += run
                    wall, cpu = rates(run)
                    print(f'{figure}, {name} metrics:'
                          f' {statistics.median(wall):,.0f} ticks/s,'
                          f' {statistics.median(cpu):,.0f} per CPU s'
                          f' (medians of {len(run)} s)', flush=True)
                print(f'{scraped} scrapes', flush=True)
            plain_wall, plain_cpu = rates(pooled['without'])
            served_wall, served_cpu = rates(pooled['with'])
            rows.append((figure, ratio(served_wall, plain_wall),
                         ratio(served_cpu, plain_cpu), goal))
            tick_us[figure] = 1e6 / statistics.median(plain_cpu)
        if min(scrapes) < rounds * seconds / 2:
            sys.exit(f'A process was scraped only {min(scrapes)} times')
        hook = hook_cost()
    finally:
        shutil.rmtree(base)
    lines = [
        'figure           ticks/s  95 % interval  per CPU s  95 % interval'
        '  goal    met',
    ]
    for name, wall, cpu, goal in rows:
        met = 'yes' if cpu[0] >= goal else 'NO'
        lines.append(
            f'{name:<15}  {wall[0]:>7.3f}  {wall[1]:.3f}-{wall[2]:.3f}'
            f'    {cpu[0]:>9.3f}  {cpu[1]:.3f}-{cpu[2]:.3f}    ≥ {goal:.2f}'
            f'  {met:>4}')
    lines += [
        '',
        f'Ratios, with metrics to without, of the medians of the ticks per'
        f' second (wall clock) and per CPU second (all threads of the'
        f' runner: the scrapes count) of {processes * rounds * seconds}'
        f' seconds each way, and their 95 % intervals (bootstrap).'
        f'  {processes} processes ran the runner (appmain: set-up and loop)'
        f' without and with metrics in turn, {rounds} times each way,'
        f' {seconds} s a run after one to warm up; metrics served on'
        f' 127.0.0.1 and scraped every {SCRAPE_INTERVAL} s'
        f' ({sum(scrapes)} scrapes).  "met" is judged on the ratio per CPU'
        f' second.',
        f'The hook on every tick (Measure.after_tick) takes {hook:.2f} µs: '
        + ', '.join(f'{hook / us:.1%} of one of the {figure} without'
                    f' metrics ({us:.0f} µs of CPU)'
                    for figure, us in tick_us.items()) + '.',
        'Database: FileStorage ' + ('on disk.' if on_disk else
                                    f'on a tmpfs ({TMPFS}).'),
        f'Python {platform.python_version()}, {os.cpu_count()} CPUs,'
        f' load average at the end'
        f' {" ".join(f"{x:.1f}" for x in os.getloadavg())};'
        f' whole run {time.monotonic() - began:.0f} s.',
    ]
    table = len(rows) + 2
    text = '\n'.join(lines[:table] + [
        textwrap.fill(line, 78) for line in lines[table:]]) + '\n'
    print('\n' + text)
    out = WORK if args.quick else HERE
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'metrics-results.txt'), 'w') as f:
        f.write(text)


if __name__ == '__main__':
    main()
