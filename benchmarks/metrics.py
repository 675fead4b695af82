#!/usr/bin/env python3
"""Benchmark: the cost of Prometheus metrics served while a runner ticks.

    .venv/bin/python benchmarks/metrics.py [--quick]

Run it with a Python that has this checkout and its ``metrics`` extra.  The
same runner (workers/metrics.py) ticks empty ticks, then writing ticks, for
SECONDS seconds (and one to warm up) without metrics and with them served
on a port of 127.0.0.1 that this script scrapes every SCRAPE_INTERVAL
seconds, in turn (without, with, without, ...), ROUNDS times.  Each second
of a run gives the ticks per second and per CPU second (all the runner's
threads: the scrapes count); the figures are the ratios, with metrics to
without, of the medians and of the 90th percentiles of the seconds of all
rounds.  Other work on a shared machine only ever slows a second, and comes
and goes within seconds: the 90th percentile is the runner's own speed,
and "met" is judged on it.  Writes benchmarks/metrics-results.txt (--quick:
to benchmarks/work/); the exit status is 1 if a run failed.
"""

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request

from run import SITE_ZCML
from run import TMPFS
from run import WORK
from run import WORKERS
from run import ZOPE_CONF


HERE = os.path.dirname(os.path.abspath(__file__))
# Seconds between two scrapes (Prometheus' default is 15 s: this is harder).
SCRAPE_INTERVAL = 1
# Seconds a run is measured, rounds (full, quick).
SECONDS = (8, 2)
ROUNDS = (9, 1)
# figure -> (worker kind, goal).
FIGURES = {
    'empty ticks': ('empty', 0.85),
    'writing ticks': ('writing', 0.97),
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
                interval = SCRAPE_INTERVAL
            except OSError:
                interval = 0.01  # not serving yet
            self.stopped.wait(interval)


def run_worker(template, kind, seconds, served):
    """The seconds of one run: [(ticks, CPU seconds, seconds)], and the
    number of scrapes during it."""
    directory = tempfile.mkdtemp(dir=template.rsplit('/', 1)[0])
    try:
        for name in os.listdir(template):
            shutil.copy(os.path.join(template, name), directory)
        port = free_port() if served else None
        scraper = Scraper(port) if served else None
        if scraper:
            scraper.start()
        proc = subprocess.run(
            [sys.executable, os.path.join(WORKERS, 'metrics.py'),
             'zope.conf', kind, str(seconds), str(port or '-')],
            cwd=directory, capture_output=True, text=True, timeout=600)
        if scraper:
            scraper.stopped.set()
            scraper.join()
        if proc.returncode != 0 or 'Traceback' in proc.stderr:
            sys.exit(f'{kind} ticks failed ({proc.returncode}):\n'
                     + proc.stderr)
        reports = [json.loads(line) for line in proc.stdout.splitlines()]
        figures = {key: value for report in reports
                   for key, value in report.items()}
        if len(figures.get('seconds', ())) != seconds:
            sys.exit(f'{kind} ticks: measured {figures.get("seconds")}')
        return figures['seconds'], scraper.scrapes if scraper else None
    finally:
        shutil.rmtree(directory)


def rates(seconds):
    """The ticks per second and per CPU second of each of `seconds`."""
    return ([ticks / wall for ticks, cpu, wall in seconds],
            [ticks / cpu for ticks, cpu, wall in seconds])


def p90(values):
    return statistics.quantiles(values, n=10)[-1]


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
    seconds, rounds = (SECONDS[1], ROUNDS[1]) if args.quick else (
        SECONDS[0], ROUNDS[0])
    began = time.monotonic()
    on_disk = not os.path.isdir(TMPFS)
    base = tempfile.mkdtemp(prefix='runner-metrics-',
                            dir=None if on_disk else TMPFS)
    rows = []
    scrapes = []
    try:
        template = prepare(base)
        for figure, (kind, goal) in FIGURES.items():
            measured = {False: [], True: []}
            for i in range(rounds):
                for served in (False, True):
                    run, scraped = run_worker(template, kind, seconds,
                                              served)
                    measured[served] += run
                    if served:
                        scrapes.append(scraped)
                    wall, cpu = rates(run)
                    print(f'{figure}, {"with" if served else "without"}'
                          f' metrics: {statistics.median(wall):,.0f}'
                          f' ticks/s, {statistics.median(cpu):,.0f} per'
                          f' CPU s (medians of {len(run)} s)'
                          + (f', {scraped} scrapes' if served else ''),
                          flush=True)
            (plain_wall, plain_cpu), (served_wall, served_cpu) = (
                rates(measured[False]), rates(measured[True]))
            rows.append((
                figure,
                statistics.median(served_wall) / statistics.median(
                    plain_wall),
                statistics.median(served_cpu) / statistics.median(plain_cpu),
                p90(served_wall) / p90(plain_wall),
                p90(served_cpu) / p90(plain_cpu), goal))
        if min(scrapes) < seconds / 2:
            sys.exit(f'A run with metrics was scraped only {min(scrapes)}'
                     ' times')
    finally:
        shutil.rmtree(base)
    lines = [
        '                        median             90th percentile',
        'figure                  ticks/s  per CPU s  ticks/s  per CPU s'
        '  goal    met',
    ]
    for name, wall, cpu, wall90, cpu90, goal in rows:
        met = 'yes' if cpu90 >= goal else 'NO'
        lines.append(
            f'{name:<22}  {wall:>7.3f}  {cpu:>9.3f}  {wall90:>7.3f}'
            f'  {cpu90:>9.3f}  ≥ {goal:.2f}  {met:>4}')
    lines += [
        '',
        f'Ratios, with metrics to without, of the ticks per second (wall'
        f' clock) and per CPU second (all threads of the runner: the'
        f' scrapes count): of the medians and of the 90th percentiles of'
        f' the {rounds * seconds} seconds of {rounds} runs each way, run in'
        f' turn (without, with, ...).  Metrics served on 127.0.0.1 and'
        f' scraped every {SCRAPE_INTERVAL} s during the runs with them'
        f' (median {statistics.median(scrapes):.0f} scrapes a run of'
        f' {seconds + 1} s and its start).  Other work on the machine only'
        f' ever slows a second: the 90th percentile is the runner\'s own'
        f' speed, and "met" is judged on it per CPU second.',
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
