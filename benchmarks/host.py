#!/usr/bin/env python3
"""Benchmark: many workers in one process (a host) or one process each.

    python3 benchmarks/host.py [--quick]

Runs workers/host_worker.py in the virtualenv benchmarks/work/venv-full
(this checkout with zope.app.zcmlfiles; made on first use, see venvs.py):
eight workers in one gocept.runner.host.Host against eight single runners
(appmain), in turn (host first in one round, the singles first in the
next), so that drift of the machine hits both alike:

1. Memory and start-up, with the lean site (site.zcml) and with the full
   zope.app site of gocept.runner 3.0's tests (site-full.zcml): eight
   workers of writing ticks (a counter of their own each) in one host
   against eight processes started at once.  The RSS once every worker's
   first tick has committed and after its last tick; the seconds from
   starting the process(es) until every first tick has committed.
2. Ticks that wait 10 ms, as on I/O: eight in a host, in total, against
   eight times one single runner alone.
3. Empty and writing ticks of one worker in a host against the same worker
   as a single runner; and in one process (workers/host_loop.py), the
   host's thread against the main thread, many runs each.

Each figure is the median of the rounds' ratios with their spread, and for
ticks also the ratio of the best runs (steadier on a busy machine: other
work only ever slows a run), on which "met" is judged there.  Writes
benchmarks/host-results.txt (--quick, a smoke run: benchmarks/work/).  The
exit status is 1 if a run failed.
"""

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import run
from run import TMPFS
from run import WORK
from run import ZOPE_CONF

import venvs


HERE = os.path.dirname(os.path.abspath(__file__))
SITES = {
    'lean': run.SITE_ZCML,
    'full': os.path.join(HERE, 'site-full.zcml'),
}
WORKER = 'host_worker'
N = 8


class Sizes:
    """How many rounds and how much work, in a full and in a quick run."""

    def __init__(self, quick):
        self.quick = quick
        # RSS hardly varies between rounds; start-up does.
        self.memory_rounds = 1 if quick else 3
        self.memory_ticks = 500 if quick else 5000
        self.io_rounds = 2 if quick else 5
        self.io_ticks = 50 if quick else 200
        self.rounds = 2 if quick else 9
        self.ticks = 2000 if quick else 20000
        self.writes = 300 if quick else 3000
        # One process, many short runs of each (workers/host_loop.py).
        self.loop_runs = 3 if quick else 25
        self.loop_ticks = 1000 if quick else 5000


class HostBench(run.Bench):
    """run.Bench for one site: its zope.conf, template and runs."""

    def __init__(self, sizes, site, python):
        super().__init__(sizes, on_disk=False)
        self.site = site
        self.python = {'host': python, 'single': python}

    def setup(self):
        self.zope_conf = os.path.join(WORK, f'host-{self.site}.conf')
        with open(self.zope_conf, 'w') as f:
            f.write(ZOPE_CONF.format(site_zcml=SITES[self.site]))
        # A tmpfs, as run.py: a commit does not wait for a shared disk.
        if os.access(TMPFS, os.W_OK):
            self.runs_dir = tempfile.mkdtemp(
                prefix=f'gocept.runner-host-{self.site}-', dir=TMPFS)
        else:
            self.runs_dir = os.path.join(WORK, f'runs-host-{self.site}')
            shutil.rmtree(self.runs_dir, ignore_errors=True)
            os.makedirs(self.runs_dir)
        self.template = os.path.join(self.runs_dir, 'template')
        os.makedirs(self.template)
        proc = subprocess.run(
            self.command('host', WORKER, ('prepare', N, '-', 0)),
            cwd=self.template, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit('Cannot prepare the template database:\n' + proc.stderr)

    def host(self, scenario, n, kind, count):
        return self.start(scenario, 'host', WORKER, 'host', n, kind, count)

    def singles(self, scenario, n, kind, count):
        """Start `n` single runners at once (w0 ... wn-1)."""
        return [self.start(scenario, 'single', WORKER, 'single', i, kind,
                           count) for i in range(n)]


def reports(run_, key):
    """The reports of `run_` that have `key`."""
    return [r for r in run_.reports if key in r]


def checked(run_, names, count, writing=False):
    """Check that each worker of `names` ticked `count` times (and, if
    `writing`, that its counter holds `count`); return `run_`."""
    counts = run_.value('counts')
    ended = sorted(r['worker'] for r in reports(run_, 'ticks'))
    if ended != sorted(names):
        raise run_.failure(f'the workers {ended} ended, not {names}')
    if writing:
        wrong = {n: counts[n] for n in names if counts[n] != count}
        if wrong:
            raise run_.failure(f'the counters hold {wrong}, not {count}')
    return run_


def names(n, first=0):
    return [f'w{i}' for i in range(first, first + n)]


def committed(runs):
    """Seconds from the first start to the last first commit of `runs`."""
    return (max(r['committed'] for run_ in runs
                for r in reports(run_, 'committed'))
            - min(run_.started for run_ in runs))


def rate(run_):
    """Ticks per second of `run_`, all its workers together."""
    return sum(r['ticks'] / r['seconds'] for r in reports(run_, 'ticks'))


def throughput(runs):
    """Ticks per second of all workers of `runs` together: from the first
    worker's first tick to the last worker's last."""
    ended = [r for run_ in runs for r in reports(run_, 'ticks')]
    return (sum(r['ticks'] for r in ended)
            / (max(r['end'] for r in ended) - min(r['start'] for r in ended)))


# -- the scenarios --

def memory_startup(bench):
    """1. RSS and start-up: 8 workers in a host, 8 single runners."""
    count = bench.sizes.memory_ticks
    site = bench.site
    for i in range(bench.sizes.memory_rounds):
        order = ('host', 'single') if i % 2 == 0 else ('single', 'host')
        for mode in order:
            if mode == 'host':
                host = checked(bench.finish(bench.host(
                    f'memory-{site}', N, 'writing', count)),
                    names(N), count, writing=True)
                bench.record(f'{site}_startup', 'host', committed([host]))
                # The RSS once the last worker's first tick committed, and
                # once the last worker ended.
                bench.record(f'{site}_rss_start', 'host', max(
                    r['rss'] for r in reports(host, 'rss')) / 1024)
                bench.record(f'{site}_rss_end', 'host', max(
                    r['rss_end'] for r in reports(host, 'rss_end')) / 1024)
                bench.record(f'{site}_writes', 'host', throughput([host]))
            else:
                singles = [
                    checked(bench.finish(running), names(1, i), count,
                            writing=True)
                    for i, running in enumerate(bench.singles(
                        f'memory-{site}', N, 'writing', count))]
                bench.record(f'{site}_startup', 'single', committed(singles))
                for key, value in (('rss_start', 'rss'),
                                   ('rss_end', 'rss_end')):
                    rss = [run_.value(value) / 1024 for run_ in singles]
                    bench.record(f'{site}_{key}', 'single', sum(rss))
                    bench.record(f'{site}_{key}', 'one',
                                 statistics.median(rss))


def io_ticks(bench):
    """2. Ticks waiting 10 ms: 8 in a host in total, one single alone."""
    count = bench.sizes.io_ticks
    for i in range(bench.sizes.io_rounds):
        order = ('host', 'single') if i % 2 == 0 else ('single', 'host')
        for mode in order:
            if mode == 'host':
                host = checked(bench.finish(bench.host(
                    'io', N, 'io', count)), names(N), count)
                bench.record('io', 'host', rate(host))
            else:
                [running] = bench.singles('io', 1, 'io', count)
                single = checked(bench.finish(running), names(1), count)
                bench.record('io', 'one', rate(single))


def one_worker(bench):
    """3. Empty and writing ticks: one worker in a host, a single runner;
    and in one process, the best of many runs of each."""
    for kind, count in (('empty', bench.sizes.ticks),
                        ('writing', bench.sizes.writes)):
        for i in range(bench.sizes.rounds):
            order = ('host', 'single') if i % 2 == 0 else ('single', 'host')
            for mode in order:
                if mode == 'host':
                    running = bench.host(kind, 1, kind, count)
                else:
                    [running] = bench.singles(kind, 1, kind, count)
                done = checked(bench.finish(running), names(1), count,
                               writing=kind == 'writing')
                bench.record(kind, mode, rate(done))
        loops = bench.run(f'loop-{kind}', 'host', 'host_loop', kind,
                          bench.sizes.loop_ticks, bench.sizes.loop_runs)
        for host, single in zip(loops.value('host'), loops.value('single')):
            bench.record(f'{kind}_loop', 'host', loops.value('ticks') / host)
            bench.record(f'{kind}_loop', 'single',
                         loops.value('ticks') / single)


# -- the results --

class Figure:
    """A row of the table: `value` of `a` against `b` (times `factor`)."""

    def __init__(self, label, bench, key, a, b, unit, goal, higher,
                 factor=1, best=False, b_key=None):
        self.label = label
        self.unit = unit
        self.goal = goal
        self.higher = higher
        self.best = best
        values = bench.values.get(key, {})
        self.a = values.get(a, [])
        self.b = [value * factor for value in
                  bench.values.get(b_key or key, {}).get(b, [])]
        # The rounds' ratios: the n-th run of a against the n-th of b.
        self.ratios = [x / y for x, y in zip(self.a, self.b) if y]

    def ratio(self):
        """The ratio judged: of the best runs, or the median of the rounds.
        """
        if not self.ratios:
            return None
        if self.best:
            pick = max if self.higher else min
            return pick(self.a) / pick(self.b)
        return statistics.median(self.ratios)

    def met(self):
        ratio = self.ratio()
        if self.goal is None or ratio is None:
            return '-'
        ok = ratio >= self.goal if self.higher else ratio <= self.goal
        return 'met' if ok else 'not met'

    def row(self):
        def spread(values, digits):
            if not values:
                return '-'
            low, high = min(values), max(values)
            mid = statistics.median(values)
            return (f'{mid:,.{digits}f} [{low:,.{digits}f}-{high:,.{digits}f}]'
                    if len(values) > 1 else f'{mid:,.{digits}f}')
        digits = 0 if self.unit == 'ticks/s' else (
            1 if self.unit == 'MB' else 3)
        best = self.ratio() if self.best else None
        goal = ('-' if self.goal is None else
                f'{"≥" if self.higher else "≤"} {self.goal:g}')
        return [self.label, self.unit, spread(self.a, digits),
                spread(self.b, digits), spread(self.ratios, 3),
                '-' if best is None else f'{best:.3f}', goal, self.met()]


def figures(benches, sizes):
    lean, full = benches['lean'], benches['full']
    rows = []
    for site, bench in (('lean', lean), ('full', full)):
        if bench is None:
            continue
        for key, when in (('rss_start', 'after start-up'),
                          ('rss_end', f'after {sizes.memory_ticks:,}'
                                      ' ticks each')):
            rows.append(Figure(
                f'RSS {when}, {site} ZCML: host ÷ one single', bench,
                f'{site}_{key}', 'host', 'one', 'MB', 1.3, False))
            rows.append(Figure(
                f'RSS {when}, {site} ZCML: host ÷ 8 singles', bench,
                f'{site}_{key}', 'host', 'single', 'MB', None, False))
        rows.append(Figure(
            f'start-up to 8 first commits, {site} ZCML: host ÷ 8 singles',
            bench, f'{site}_startup', 'host', 'single', 's', None, False))
        if site == 'lean':
            rows.append(Figure(
                'writing ticks of 8 workers in a host, together ÷ one'
                ' single', bench, f'{site}_writes', 'host', 'single',
                'ticks/s', None, True, best=True, b_key='writing'))
    rows += [
        Figure(f'ticks waiting 10 ms ({sizes.io_ticks} each): host of 8 ÷'
               f' 8 × one single', lean, 'io', 'host', 'one', 'ticks/s',
               0.9, True, factor=N, best=True),
        Figure(f'empty ticks ({sizes.ticks:,}): host of 1 ÷ single', lean,
               'empty', 'host', 'single', 'ticks/s', 0.95, True, best=True),
        Figure(f'writing ticks ({sizes.writes:,}): host of 1 ÷ single',
               lean, 'writing', 'host', 'single', 'ticks/s', 0.95, True,
               best=True),
    ]
    for kind in ('empty', 'writing'):
        rows.append(Figure(
            f'{kind} ticks, one process, {sizes.loop_runs} runs'
            f' ({sizes.loop_ticks:,}): host thread ÷ main thread', lean,
            f'{kind}_loop', 'host', 'single', 'ticks/s', 0.95, True,
            best=True))
    return rows


def table(rows):
    header = ['figure', 'unit', 'host', 'single(s)', 'ratio: median',
              'ratio: bests', 'goal', 'met']
    cells = [header] + [figure.row() for figure in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    rule = '  '.join('=' * w for w in widths)
    lines = [rule, '  '.join(h.ljust(w) for h, w in zip(header, widths)),
             rule]
    for row in cells[1:]:
        lines.append('  '.join(
            cell.ljust(w) if i in (0, 1, 6, 7) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    lines.append(rule)
    return lines


def load():
    return ' '.join(f'{x:.1f}' for x in os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run: fewer rounds, less work')
    parser.add_argument('--sites', default='lean,full',
                        help='the sites of scenario 1 (default: lean,full)')
    options = parser.parse_args()
    sizes = Sizes(options.quick)
    os.makedirs(WORK, exist_ok=True)
    python = venvs.python('full')
    began = time.monotonic()
    load_before = load()
    benches = {'lean': None, 'full': None}
    failures = {}
    try:
        for site in options.sites.split(','):
            benches[site] = bench = HostBench(sizes, site, python)
            bench.setup()
            scenarios = [memory_startup]
            if site == 'lean':
                scenarios += [io_ticks, one_worker]
            for function in scenarios:
                bench.scenario(function)
            failures.update((f'{name} ({site})', message)
                            for name, message in bench.failures.items())
    finally:
        for bench in benches.values():
            if bench is not None:
                bench.cleanup()
    lines = table(figures(benches, sizes))
    notes = [
        f'Date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC;'
        f' {platform.machine()}, {os.cpu_count()} CPUs, Python'
        f' {platform.python_version()}; '
        + ', '.join(f'{name} {version}' for name, version in
                    run.versions(python).items())
        + f'; FileStorage on {TMPFS} (a tmpfs).  Load average'
        f' {load_before} before, {load()} after; the run took'
        f' {time.monotonic() - began:.0f} s'
        + (' (--quick: a smoke run, not a measurement).'
           if sizes.quick else '.'),
        f'Rounds: {sizes.memory_rounds} of RSS and start-up for each site,'
        f' {sizes.io_rounds} of ticks waiting 10 ms, {sizes.rounds} of'
        f' empty and of writing ticks; host and single(s) in turn, which'
        f' first alternating.  host/single(s): median [lowest-highest] of'
        f' the rounds.  "ratio: median" is the median [spread] of the'
        f' rounds\' ratios; "ratio: bests" the ratio of the best run of'
        f' each, on which "met" is judged where it is given (other work on'
        f' the machine only ever slows a run); the others are judged on'
        f' the median.',
        f'One process: workers/host_loop.py sets the lean site up once and'
        f' runs one worker {sizes.loop_runs} times as the single runner'
        f' does (a MainLoop in the main thread) and as a process of'
        f' several loops runs each (Process._run_in_thread: a thread of its'
        f' own, with its own connection), in turn.  No'
        f' process start and no other process in the comparison: the'
        f' steadiest figure of the two on a busy machine.',
        'RSS: the process\'s when the last of its workers had its first'
        ' tick committed, and after the last worker\'s last tick (writing'
        ' ticks, a counter of its own each); "one single" is the median'
        ' of the eight single runners, "8 singles" their sum.  Writing'
        ' ticks of 8 workers in a host: all ticks of those runs over the'
        ' time from the first worker\'s first tick to the last worker\'s'
        ' last, against the runs of one single runner of scenario 3 (to'
        ' read, not a goal: ticks that compute share one interpreter).'
        '  Start-up:'
        ' from starting the process (the first of the eight) until the'
        ' last worker\'s first tick has committed.',
    ]
    for name, message in failures.items():
        notes.append(f'FAILED {name}: {message}')
    text = '\n'.join(lines) + '\n\n' + '\n'.join(
        textwrap.fill(note, 78) for note in notes) + '\n'
    print('\n' + text)
    out = WORK if sizes.quick else HERE
    with open(os.path.join(out, 'host-results.txt'), 'w') as f:
        f.write(text)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
