#!/usr/bin/env python3
"""Benchmark: the cost of Prometheus metrics served while a runner ticks.

    .venv/bin/python benchmarks/metrics.py [--quick]

Run it with a Python that has this checkout and its ``metrics`` extra.  The
same worker (workers/metrics.py) runs empty ticks and writing ticks, once
without metrics and once with them served on a port of 127.0.0.1 that this
script scrapes every SCRAPE_INTERVAL seconds, in turn (without, with,
without, ...) so that drift of the machine hits both alike.  The figures are
the ratios of the ticks per second, and of the ticks per CPU second, with
metrics to those without: the medians of the rounds' ratios, and the ratios
of the best runs (steadier on a machine busy with other work).  Writes
benchmarks/metrics-results.txt (--quick: to benchmarks/work/); the exit
status is 1 if a run failed.
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
# figure -> (worker kind, ticks in a full run, ticks in a quick one, goal).
FIGURES = {
    'empty ticks': ('empty', 200000, 20000, 0.85),
    'writing ticks': ('writing', 20000, 2000, 0.97),
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


def run_worker(template, kind, count, served):
    """Ticks per second and per CPU second of one run, and the number of
    scrapes during it."""
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
             'zope.conf', kind, str(count), str(port or '-')],
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
        if figures.get('done') != count:
            sys.exit(f'{kind} ticks: ran {figures.get("done")} ticks')
        return (figures['ticks'] / figures['seconds'],
                figures['ticks'] / figures['cpu'],
                scraper.scrapes if scraper else None)
    finally:
        shutil.rmtree(directory)


def run_loops(template, kind, count, runs):
    """The fewest CPU seconds of `runs` loops of `count` ticks without and
    with metrics, in one process."""
    directory = tempfile.mkdtemp(dir=template.rsplit('/', 1)[0])
    try:
        for name in os.listdir(template):
            shutil.copy(os.path.join(template, name), directory)
        proc = subprocess.run(
            [sys.executable, os.path.join(WORKERS, 'metrics_loop.py'),
             kind, str(count), str(runs)],
            cwd=directory, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            sys.exit(f'{kind} loops failed:\n{proc.stderr}')
        return json.loads(proc.stdout.splitlines()[-1])
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
                        help='a smoke run: fewer ticks and rounds')
    args = parser.parse_args()
    rounds = 1 if args.quick else 9
    began = time.monotonic()
    on_disk = not os.path.isdir(TMPFS)
    base = tempfile.mkdtemp(prefix='runner-metrics-',
                            dir=None if on_disk else TMPFS)
    rows = []
    try:
        template = prepare(base)
        for figure, (kind, full, quick, goal) in FIGURES.items():
            count = quick if args.quick else full
            run_worker(template, kind, count // 10, True)  # warm up
            ratios, cpu_ratios, scrapes = [], [], []
            best = {'plain': 0, 'plain_cpu': 0, 'served': 0, 'served_cpu': 0}
            for i in range(rounds):
                plain, plain_cpu, _ = run_worker(template, kind, count,
                                                 False)
                served, served_cpu, scraped = run_worker(template, kind,
                                                         count, True)
                for name, figure_ in (('plain', plain),
                                      ('plain_cpu', plain_cpu),
                                      ('served', served),
                                      ('served_cpu', served_cpu)):
                    best[name] = max(best[name], figure_)
                ratios.append(served / plain)
                cpu_ratios.append(served_cpu / plain_cpu)
                scrapes.append(scraped)
                print(f'{figure}: {plain:,.0f} ticks/s without,'
                      f' {served:,.0f} with metrics ({scraped} scrapes):'
                      f' {served / plain:.3f}; per CPU second'
                      f' {plain_cpu:,.0f} and {served_cpu:,.0f}:'
                      f' {served_cpu / plain_cpu:.3f}', flush=True)
            if min(scrapes) < 1:
                sys.exit(f'{figure}: a run with metrics was never scraped')
            loops = run_loops(template, kind, count // 4, 3 * rounds)
            rows.append((f'{figure} ({count:,})', statistics.median(ratios),
                         statistics.median(cpu_ratios),
                         best['served'] / best['plain'],
                         best['served_cpu'] / best['plain_cpu'],
                         loops['without'] / loops['with'], goal,
                         statistics.median(scrapes)))
    finally:
        shutil.rmtree(base)
    lines = [
        '                        median of ratios    ratio of bests'
        '       one process',
        'figure                  ticks/s  per CPU s  ticks/s  per CPU s'
        '  per CPU s  goal    met',
    ]
    for (name, ratio, cpu_ratio, best, best_cpu, loops, goal,
         scraped) in rows:
        met = 'yes' if loops >= goal else 'NO'
        lines.append(
            f'{name:<22}  {ratio:>7.3f}  {cpu_ratio:>9.3f}  {best:>7.3f}'
            f'  {best_cpu:>9.3f}  {loops:>9.3f}  ≥ {goal:.2f}  {met:>4}')
    lines += [
        '',
        f'Ratios of the ticks per second (wall clock) and per CPU second'
        f' (all threads of the runner: the scrapes count) with metrics to'
        f' those without: the median of the ratios of {rounds} rounds'
        f' (without, with, in turn), and the ratio of the best runs of'
        f' each (steadier on a busy machine).  Metrics served on 127.0.0.1'
        f' and scraped every {SCRAPE_INTERVAL} s during the runs with them'
        f' (median {statistics.median(r[-1] for r in rows):.0f} scrapes a'
        f' run).  One process: the loop alone (no process start, no'
        f' scrapes) of a quarter of the ticks, {3 * rounds} runs without'
        f' and with metrics in turn in one process, the ratio of the best'
        f' of each; other work on the machine only ever slows a run, so'
        f' this is the steadiest figure, and "met" is judged on it.',
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
