#!/usr/bin/env python3
"""Benchmark: gocept.runner on a Zope 4+ instance against ``zconsole run``.

    python benchmarks/zope_instance.py [--plone] [--quick]

Run it with the Python of a virtualenv that has gocept.runner[zope] (the
checkout's .venv, say), and, with --plone, Plone and plone.api too.  It
makes an instance with Zope's mkwsgiinstance (in /dev/shm where there is
one), then, in rounds that alternate which goes first, so that drift of
the machine hits both alike:

1. start-up to the first tick: ``gocept-runner --once`` against ``zconsole
   run`` of the same instance, each with a first tick (script) that writes
   the time; the seconds from starting the process to that time.
2. writing ticks (an attribute of the OFS application, one commit each):
   ``gocept-runner --ticks 0`` against a loop written by hand in a
   ``zconsole run`` script (begin, change, commit); ticks per second
   between the first tick and the last.
With --plone, 1. and 2. on a Plone 6 site made with Plone's site factory
instead: ``gocept-runner -s Plone`` against ``zconsole run`` scripts that
make the site the component site themselves; each tick (and the first)
finds the portal with ``plone.api.portal.get()`` and writes an attribute
of it.  Run the bare instance's figures where Plone is not installed:
where it is, every instance imports Plone's products.

Each figure is the median of the rounds with its spread, and so is the
ratio of the rounds; the ratio of the best run of each (steadier on a busy
machine: other work only ever slows a run) is judged against the goals of
issue 28: start-up at most 1.0 × zconsole's, ticks at least 0.9 × the
hand-written loop's.
Writes benchmarks/zope-results.txt, with --plone plone-results.txt
(--quick, a smoke run: prints it only).
"""

import argparse
import compileall
import datetime
import importlib.util
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version


HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
TIMEOUT = 300
WHAT = ('startup', 'ticks', 'plone startup', 'plone ticks')

WORKERS = '''\
import os
import time

from zope.globalrequest import getRequest

import gocept.runner


OUT = os.environ['BENCH_OUT']
TICKS = int(os.environ.get('BENCH_TICKS', '0'))
stamps = []


def first():
    with open(OUT, 'w') as f:
        f.write(repr(time.time()))
    return gocept.runner.Exit


def writing():
    app = getRequest()['PUBLISHED']
    app.bench_count = getattr(app, 'bench_count', 0) + 1
    stamps.append(time.perf_counter())
    if len(stamps) == TICKS:
        with open(OUT, 'w') as f:
            f.write(repr((TICKS - 1) / (stamps[-1] - stamps[0])))
        return gocept.runner.Exit


# Plone's modules are imported in its workers: the module serves an
# instance without Plone as well.
def add_site():
    from Products.CMFPlone.factory import addPloneSite
    addPloneSite(getRequest()['PUBLISHED'], 'Plone',
                 extension_ids=['plone.app.contenttypes:default'])
    return first()


def first_plone():
    import plone.api
    plone.api.portal.get()
    return first()


def writing_plone():
    import plone.api
    portal = plone.api.portal.get()
    portal.bench_count = getattr(portal, 'bench_count', 0) + 1
    stamps.append(time.perf_counter())
    if len(stamps) == TICKS:
        with open(OUT, 'w') as f:
            f.write(repr((TICKS - 1) / (stamps[-1] - stamps[0])))
        return gocept.runner.Exit
'''

# zconsole run executes a script with the application as `app`.
FIRST_SCRIPT = '''\
import os
import time

with open(os.environ['BENCH_OUT'], 'w') as f:
    f.write(repr(time.time()))
'''

FIRST_PLONE_SCRIPT = '''\
import os
import time

import plone.api
from zope.component.hooks import setSite

setSite(app.Plone)
plone.api.portal.get()
with open(os.environ['BENCH_OUT'], 'w') as f:
    f.write(repr(time.time()))
'''

LOOP_PLONE_SCRIPT = '''\
import os
import time

import plone.api
import transaction
from zope.component.hooks import setSite

setSite(app.Plone)
ticks = int(os.environ['BENCH_TICKS'])
stamps = []
for _ in range(ticks):
    transaction.begin()
    portal = plone.api.portal.get()
    portal.bench_count = getattr(portal, 'bench_count', 0) + 1
    stamps.append(time.perf_counter())
    transaction.commit()
with open(os.environ['BENCH_OUT'], 'w') as f:
    f.write(repr((ticks - 1) / (stamps[-1] - stamps[0])))
'''

LOOP_SCRIPT = '''\
import os
import time

import transaction

ticks = int(os.environ['BENCH_TICKS'])
stamps = []
for _ in range(ticks):
    transaction.begin()
    app.bench_count = getattr(app, 'bench_count', 0) + 1
    stamps.append(time.perf_counter())
    transaction.commit()
with open(os.environ['BENCH_OUT'], 'w') as f:
    f.write(repr((ticks - 1) / (stamps[-1] - stamps[0])))
'''


class Bench:
    """An instance in `directory` and the files of the runs."""

    def __init__(self, directory, plone):
        self.directory = directory
        self.instance = os.path.join(directory, 'instance')
        self.conf = os.path.join(self.instance, 'etc', 'zope.conf')
        self.out = os.path.join(directory, 'out')
        subprocess.run(
            [sys.executable, '-m', 'Zope2.utilities.mkwsgiinstance', '-d',
             self.instance, '-u', 'admin:admin'],
            check=True, stdout=subprocess.DEVNULL)
        for name, text in (('zopebench.py', WORKERS),
                           ('first.py', FIRST_SCRIPT),
                           ('loop.py', LOOP_SCRIPT),
                           ('first_plone.py', FIRST_PLONE_SCRIPT),
                           ('loop_plone.py', LOOP_PLONE_SCRIPT)):
            with open(os.path.join(directory, name), 'w') as f:
                f.write(text)
        # The first start creates the application: not measured.
        self.zconsole('first.py')
        if plone:
            self.runner('add_site', '--once', '--principal', 'admin')

    def run(self, command, ticks=0):
        """Run `command`; return (when it started, what it wrote)."""
        if os.path.exists(self.out):
            os.remove(self.out)
        env = dict(os.environ, BENCH_OUT=self.out, BENCH_TICKS=str(ticks))
        started = time.time()
        subprocess.run(command, cwd=self.directory, env=env, check=True,
                       timeout=TIMEOUT, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        with open(self.out) as f:
            return started, float(f.read())

    def zconsole(self, script, ticks=0):
        return self.run([os.path.join(BIN, 'zconsole'), 'run', self.conf,
                         script], ticks)

    def runner(self, worker, *options, ticks=0):
        return self.run([os.path.join(BIN, 'gocept-runner'), '-C',
                         self.conf, *options, f'zopebench:{worker}'], ticks)

    def startup(self, kind, plone=False):
        suffix = '_plone' if plone else ''
        if kind == 'runner':
            started, first = self.runner(
                f'first{suffix}', '--once', *self.site(plone))
        else:
            started, first = self.zconsole(f'first{suffix}.py')
        return first - started

    def ticks(self, kind, ticks, plone=False):
        suffix = '_plone' if plone else ''
        if kind == 'runner':
            return self.runner(f'writing{suffix}', '--ticks', '0',
                               *self.site(plone), ticks=ticks)[1]
        return self.zconsole(f'loop{suffix}.py', ticks)[1]

    def site(self, plone):
        return ('-s', 'Plone') if plone else ()


def spread(values):
    return (f'{statistics.median(values):,.3f}'
            f' [{min(values):,.3f}-{max(values):,.3f}]')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--plone', action='store_true',
                        help='on a Plone site (Plone must be installed)')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run: 2 rounds, fewer ticks')
    args = parser.parse_args()
    rounds, ticks = (2, 300) if args.quick else (9, 3000)
    plone = args.plone
    if plone and importlib.util.find_spec('Products.CMFPlone') is None:
        parser.error('--plone: Plone is not installed')
    # The checkout's modules compiled, as an installed package's are:
    # where PYTHONDONTWRITEBYTECODE is set, a module changed since its last
    # compilation would be compiled again at every start of a runner.
    spec = importlib.util.find_spec('gocept.runner')
    compileall.compile_dir(os.path.dirname(spec.origin), quiet=1)
    parent = '/dev/shm' if os.path.isdir('/dev/shm') else None
    directory = tempfile.mkdtemp(prefix='gocept.runner.bench.',
                                 dir=parent)
    load_before = os.getloadavg()
    began = time.monotonic()
    try:
        bench = Bench(directory, plone)
        figures = {(what, kind): [] for what in WHAT
                   for kind in ('runner', 'zconsole')}
        for number in range(rounds):
            order = (('runner', 'zconsole') if number % 2 == 0
                     else ('zconsole', 'runner'))
            prefix = 'plone ' if plone else ''
            for kind in order:
                figures[prefix + 'startup', kind].append(
                    bench.startup(kind, plone))
            for kind in order:
                figures[prefix + 'ticks', kind].append(
                    bench.ticks(kind, ticks, plone))
    finally:
        shutil.rmtree(directory)
    # The best run of each: the shortest start-up, the most ticks per
    # second (other work on the machine only ever slows a run).
    if not plone:
        rows = [
            ('start-up to the first tick: gocept-runner ÷ zconsole run', 's',
             'startup', min, '≤ 1.0', lambda ratio: ratio <= 1.0),
            (f'writing ticks ({ticks:,}): gocept-runner ÷ hand loop in'
             ' zconsole', 'ticks/s', 'ticks', max, '≥ 0.9',
             lambda ratio: ratio >= 0.9),
        ]
    else:
        rows = [
            ('Plone 6 site, start-up to the first tick: gocept-runner ÷'
             ' zconsole run', 's', 'plone startup', min, '≤ 1.0',
             lambda ratio: ratio <= 1.0),
            (f'Plone 6 site, writing ticks ({ticks:,}): gocept-runner ÷'
             ' hand loop in zconsole', 'ticks/s', 'plone ticks', max,
             '≥ 0.9', lambda ratio: ratio >= 0.9),
        ]
    lines = []
    for title, unit, what, best, goal, met in rows:
        runner, zconsole = figures[what, 'runner'], figures[what, 'zconsole']
        ratios = [a / b for a, b in zip(runner, zconsole)]
        bests = best(runner) / best(zconsole)
        lines.append((title, unit, spread(runner), spread(zconsole),
                      spread(ratios), f'{bests:.3f}', goal,
                      'met' if met(bests) else 'not met'))
    header = ('figure', 'unit', 'gocept-runner', 'zconsole',
              'ratio: median', 'ratio: bests', 'goal', 'met')
    widths = [max(len(row[i]) for row in [header, *lines])
              for i in range(len(header))]
    rule = '  '.join('=' * width for width in widths)
    text = [rule, '  '.join(h.ljust(w) for h, w in zip(header, widths)),
            rule]
    text += ['  '.join(c.ljust(w) for c, w in zip(row, widths))
             for row in lines]
    text.append(rule)
    text.append('')
    plone_version = (f', Products.CMFPlone {version("Products.CMFPlone")}'
                     if plone else '')
    text.append(
        f'Date {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}'
        f' UTC; {platform.machine()}, {os.cpu_count()} CPUs, Python'
        f' {platform.python_version()}; gocept.runner'
        f' {version("gocept.runner")}, Zope {version("Zope")}, ZODB'
        f' {version("ZODB")}{plone_version}; the instance on'
        f' {parent or "disk"}.  Load'
        f' average {" ".join(f"{x:.1f}" for x in load_before)} before,'
        f' {" ".join(f"{x:.1f}" for x in os.getloadavg())} after; the run'
        f' took {time.monotonic() - began:.0f} s.  {rounds} rounds, which'
        ' goes first alternating; median [lowest-highest] of the rounds;'
        ' "ratio: median" the median [spread] of the rounds\' ratios,'
        ' "ratio: bests" that of the best run of each, on which "met" is'
        ' judged.')
    result = '\n'.join(text) + '\n'
    print(result)
    if not args.quick:
        name = 'plone-results.txt' if plone else 'zope-results.txt'
        with open(os.path.join(HERE, name), 'w') as f:
            f.write(result)


if __name__ == '__main__':
    main()
