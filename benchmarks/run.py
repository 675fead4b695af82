#!/usr/bin/env python3
"""Benchmarks: this checkout of gocept.runner, gocept.runner 3.0 and the floor.

    python3 benchmarks/run.py [--quick]

Creates (once; kept in benchmarks/work/) a virtualenv with this checkout and
one with gocept.runner 3.0 from the package index, both with the Python that
runs this script, then runs every scenario for the three implementations in
turn (this, 3.0, floor, this, 3.0, floor, ...) so that drift of the machine
hits all alike.  The floor is the same work done by hand with plain ZODB and
transaction.  Each run checks its result; a failed check fails the scenario.
Writes benchmarks/results.txt (the table) and benchmarks/results.png (the
chart); --quick, a smoke run, writes them to benchmarks/work/.  The exit
status is 1 if a scenario failed.

This script uses the standard library only; the workers in
benchmarks/workers/ run in the virtualenvs.
"""

import argparse
import json
import os
import platform
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import venvs


HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
WORK = os.path.join(HERE, 'work')
WORKERS = os.path.join(HERE, 'workers')
SITE_ZCML = os.path.join(HERE, 'site.zcml')

IMPLEMENTATIONS = ('this', '3.0', 'floor')
PRINCIPAL = 'bench.worker'
TIMEOUT = 300
TMPFS = '/dev/shm'

ZOPE_CONF = """\
# Written by benchmarks/run.py; both runners and the floor read it.  Every
# run has its own working directory with a copy of the template database.
site-definition {site_zcml}

<zodb>
  <filestorage>
    path Data.fs
  </filestorage>
</zodb>

<eventlog>
  level INFO
  <logfile>
    path STDERR
    format %(asctime)s %(levelname)s %(name)s %(message)s
  </logfile>
</eventlog>
"""


class Failure(Exception):
    """A run did not do what it had to."""


class Sizes:
    """How many runs and how much work, in a full and in a quick run."""

    def __init__(self, quick):
        self.quick = quick
        self.startup_runs = 2 if quick else 9
        self.runs = 1 if quick else 5
        # RSS hardly varies between runs, and a run takes a minute.
        self.memory_runs = 1
        self.ticks = 2000 if quick else 20000
        self.writes = 300 if quick else 3000
        self.items = 200 if quick else 2000
        # 3.0 sleeps the whole TICKS after SIGTERM: that is what is measured.
        self.signal_ticks = 3 if quick else 30
        self.memory_ticks = 500 if quick else 5000
        self.memory_mark = 100 if quick else 500


class Run:
    """One finished worker process."""

    def __init__(self, impl, directory, started, ended, proc, stdout, stderr):
        self.impl = impl
        self.directory = directory
        self.started = started
        self.elapsed = ended - started
        self.cpu = None
        self.returncode = proc.returncode
        self.stderr = stderr
        self.reports = []
        for line in stdout.splitlines():
            try:
                self.reports.append(json.loads(line))
            except ValueError:
                raise self.failure(f'unexpected output {line!r}')

    def value(self, key):
        for report in self.reports:
            if key in report:
                return report[key]
        raise self.failure(f'reported no {key!r}')

    def check(self):
        if self.returncode != 0:
            raise self.failure(f'exit status {self.returncode}')
        for bad in ('Traceback', ' ERROR ', ' WARNING '):
            if bad in self.stderr:
                raise self.failure(f'{bad.strip()} in its log')

    def failure(self, message):
        tail = '\n    '.join(self.stderr.strip().splitlines()[-15:])
        return Failure(f'{self.impl} in {self.directory}: {message}'
                       + (f'\n    {tail}' if tail else ''))


class Bench:
    """The virtualenvs, the configuration, and the figures measured."""

    def __init__(self, sizes, on_disk):
        self.sizes = sizes
        self.on_disk = on_disk
        self.python = {}
        self.values = {}    # metric -> impl -> [value, ...]
        self.failures = {}  # scenario -> message
        self.pending = []   # (run, expected database contents)
        self.versions = {}
        self.serial = 0

    # -- set-up --

    def setup(self):
        os.makedirs(WORK, exist_ok=True)
        this_python = venvs.python('this')
        released_python = venvs.python('3.0')
        self.python = {
            'this': this_python, '3.0': released_python,
            'floor': this_python}
        for impl in ('this', '3.0'):
            self.versions[impl] = versions(self.python[impl])
        self.zope_conf = os.path.join(WORK, 'zope.conf')
        with open(self.zope_conf, 'w') as f:
            f.write(ZOPE_CONF.format(site_zcml=SITE_ZCML))
        # On a shared disk every commit waits for fsync as long as the
        # other users of the disk make it wait: that would measure them, not
        # the runners.  A tmpfs keeps FileStorage and drops the waiting.
        if self.on_disk or not os.access(TMPFS, os.W_OK):
            self.runs_dir = os.path.join(WORK, 'runs')
            shutil.rmtree(self.runs_dir, ignore_errors=True)
            os.makedirs(self.runs_dir)
        else:
            self.runs_dir = tempfile.mkdtemp(
                prefix='gocept.runner-benchmarks-', dir=TMPFS)
        self.template = os.path.join(self.runs_dir, 'template')
        os.makedirs(self.template)
        proc = subprocess.run(
            [this_python, os.path.join(WORKERS, 'prepare.py'),
             self.zope_conf],
            cwd=self.template, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit('Cannot prepare the template database:\n' + proc.stderr)

    # -- running workers --

    def command(self, impl, worker, args):
        """The command running `worker` (a name in workers/) for `impl`."""
        if impl == 'floor':
            worker += '_floor'
        return [self.python[impl], os.path.join(WORKERS, worker + '.py'),
                self.zope_conf, *map(str, args)]

    def new_directory(self, scenario, impl):
        """A fresh working directory with a copy of the template database."""
        self.serial += 1
        directory = os.path.join(
            self.runs_dir, f'{scenario}-{impl}-{self.serial}')
        os.makedirs(directory)
        for name in ('Data.fs', 'Data.fs.index'):
            shutil.copy(os.path.join(self.template, name), directory)
        return directory

    def cleanup(self):
        if not self.runs_dir.startswith(WORK):
            shutil.rmtree(self.runs_dir, ignore_errors=True)

    def run(self, scenario, impl, worker, *args, command=None):
        """Run a worker to its end; return the checked Run."""
        cpu = cpu_seconds()
        run = self.finish(self.start(scenario, impl, worker, *args,
                                     command=command))
        run.cpu = cpu_seconds() - cpu
        return run

    def start(self, scenario, impl, worker, *args, command=None):
        """Start a worker; finish() waits for it."""
        directory = self.new_directory(scenario, impl)
        command = command or self.command(impl, worker, args)
        started = time.monotonic()
        proc = subprocess.Popen(
            command, cwd=directory, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return impl, directory, started, proc

    def finish(self, running):
        """Wait for a started worker; return the checked Run."""
        impl, directory, started, proc = running
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        ended = time.monotonic()
        run = Run(impl, directory, started, ended, proc, stdout, stderr)
        run.check()
        return run

    def run_and_terminate(self, scenario, impl, worker, *args):
        """Run a worker, send SIGTERM after its first tick; return the Run
        and the seconds from SIGTERM to the end of the process."""
        directory = self.new_directory(scenario, impl)
        started = time.monotonic()
        proc = subprocess.Popen(
            self.command(impl, worker, args), cwd=directory, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
        first = proc.stdout.readline() if ready else ''
        if first:
            # Let it reach its sleep after the tick.
            time.sleep(0.3)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        ended = time.monotonic()
        run = Run(impl, directory, started, ended, proc, first + stdout,
                  stderr)
        if not first:
            raise run.failure('never reported its first tick')
        run.check()
        return run, ended - signalled

    def record(self, metric, impl, value):
        self.values.setdefault(metric, {}).setdefault(impl, []).append(value)
        print(f'  {metric:<16} {impl:<6} {value:,.4g}', flush=True)

    def expect(self, run, **contents):
        """Check later that the database of `run` holds `contents`."""
        self.pending.append((run, contents))

    def verify(self):
        """Check the databases of the runs expected to hold something."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        proc = subprocess.run(
            [self.python['this'], os.path.join(WORKERS, 'verify.py'),
             *(run.directory for run, _ in pending)],
            capture_output=True, text=True)
        if proc.returncode != 0:
            raise Failure('Cannot verify the databases:\n' + proc.stderr)
        found = {}
        for line in proc.stdout.splitlines():
            report = json.loads(line)
            found[report['directory']] = report
        for run, contents in pending:
            held = found[run.directory]
            for key, expected in contents.items():
                if held[key] != expected:
                    raise run.failure(
                        f'the database holds {key}={held[key]!r},'
                        f' not {expected!r}')
        for run, _ in pending:
            shutil.rmtree(run.directory)

    def scenario(self, function):
        """Run a scenario function; record its failure if it fails."""
        name = function.__name__
        print(f'{name}: {function.__doc__.strip().splitlines()[0]}',
              flush=True)
        began = time.monotonic()
        try:
            function(self)
            self.verify()
        except Failure as e:
            self.failures[name] = str(e)
            self.pending = []
            print(f'  FAILED: {e}', flush=True)
        print(f'  ({time.monotonic() - began:.0f} s)', flush=True)


# -- the scenarios --

# Start-up variants: metric -> (label, {implementation: command}).  A
# command is a function of the Bench returning the argv to run in the
# working directory (None: workers/startup.py as usual); its process must
# report `first_tick` as that worker does and add one to the counter.  An
# implementation missing from a variant is not run in it; the table compares
# with its figure of the plain variant.
STARTUP_VARIANTS = {
    'startup': ('', {'this': None, '3.0': None, 'floor': None}),
    # 3.0 has no command line of its own.
    'startup_script': ('console script, lock file', {
        'this': lambda bench: [
            bench.python['this'],
            os.path.join(WORKERS, 'startup_script.py'),
            '-C', bench.zope_conf, '--lock-file', 'startup.lock']}),
}


def startup(bench):
    """1. Start-up: process start to first tick; a once job's whole run."""
    for _, variant in STARTUP_VARIANTS.values():
        for impl, command in variant.items():
            # Untimed: compiles the bytecode, warms the file cache.
            bench.run('startup', impl, 'startup',
                      command=command and command(bench))
    for i in range(bench.sizes.startup_runs):
        for metric, (_, variant) in STARTUP_VARIANTS.items():
            for impl, command in variant.items():
                run = bench.run('startup', impl, 'startup',
                                command=command and command(bench))
                bench.record(metric, impl, run.value('first_tick')
                             - run.started)
                bench.record(metric + '_once', impl, run.elapsed)
                bench.record(metric + '_cpu', impl, run.cpu)
                bench.expect(run, n=1)


def empty_ticks(bench):
    """2. Empty ticks (ticks=0), without and with a principal: ticks/s."""
    count = bench.sizes.ticks
    for i in range(bench.sizes.runs):
        for principal, metric in ((None, 'ticks'),
                                  (PRINCIPAL, 'ticks_principal')):
            for impl in IMPLEMENTATIONS:
                args = (count,) if principal is None else (count, principal)
                run = bench.run('ticks', impl, 'ticks', *args)
                if run.value('done') != count:
                    raise run.failure(f'ran {run.value("done")} ticks')
                if run.value('principal') != principal:
                    raise run.failure(
                        f'ran as {run.value("principal")!r}')
                if principal and impl != 'floor' and not run.value('request'):
                    raise run.failure('the participation is not a request')
                bench.record(metric, impl,
                             run.value('ticks') / run.value('seconds'))
                bench.expect(run, n=0)


def writing_ticks(bench):
    """3. Writing ticks: one change and commit per tick: ticks/s."""
    count = bench.sizes.writes
    for i in range(bench.sizes.runs):
        for impl in IMPLEMENTATIONS:
            run = bench.run('writes', impl, 'writes', count)
            bench.record('writes', impl,
                         run.value('ticks') / run.value('seconds'))
            bench.expect(run, n=count)


def per_item(bench):
    """4. transaction_per_item, one commit per item: items/s."""
    count = bench.sizes.items
    for i in range(bench.sizes.runs):
        for impl in IMPLEMENTATIONS:
            run = bench.run('peritem', impl, 'peritem', count)
            bench.record('peritem', impl,
                         run.value('items') / run.value('seconds'))
            bench.expect(run, items=count, items_ok=True)


def signal_latency(bench):
    """5. Signal latency: SIGTERM while sleeping between ticks to exit."""
    for i in range(bench.sizes.runs):
        # 3.0 sleeps out its ticks (always as long): one run of it will do.
        for impl in IMPLEMENTATIONS if i == 0 else ('this', 'floor'):
            run, latency = bench.run_and_terminate(
                'sigterm', impl, 'sigterm', bench.sizes.signal_ticks)
            ticks = [r['tick'] for r in run.reports]
            if ticks != [1]:
                raise run.failure(f'ran the ticks {ticks}, not [1]')
            if (impl != 'floor'
                    and 'Received signal 15, terminating.' not in run.stderr):
                raise run.failure('did not log the signal')
            bench.record('sigterm', impl, latency)


def memory(bench):
    """6. Memory: ticks creating and reading objects: RSS growth, peak."""
    count, mark = bench.sizes.memory_ticks, bench.sizes.memory_mark
    for i in range(bench.sizes.memory_runs):
        # Side by side: no time is measured, and one run takes a minute.
        running = [bench.start('memory', impl, 'memory', count, mark)
                   for impl in IMPLEMENTATIONS]
        for impl, run in zip(IMPLEMENTATIONS, map(bench.finish, running)):
            if run.value('ticks') != count:
                raise run.failure(f'ran {run.value("ticks")} ticks')
            bench.record('rss_growth', impl, (
                run.value('rss_end') - run.value('rss_mark')) / 1024)
            bench.record('rss_mark', impl, run.value('rss_mark') / 1024)
            bench.record('rss_peak', impl, run.value('rss_peak') / 1024)
            bench.expect(run, objects=count * 50, objects_ok=True)


SCENARIOS = (startup, empty_ticks, writing_ticks, per_item, signal_latency,
             memory)


# -- the results --

class Metric:
    """A figure in the table; `targets` are (compared with, limit) pairs:
    ``('floor', 1.1)`` means this ÷ floor ≤ 1.1 for a figure where lower is
    better, ≥ for one where higher is better; 'abs' compares the value."""

    def __init__(self, key, label, unit, higher_is_better, targets, digits,
                 fallback=None):
        self.key = key
        # The metric whose figures stand in for implementations not run.
        self.fallback = fallback
        self.label = label
        self.unit = unit
        self.higher_is_better = higher_is_better
        self.targets = targets
        self.digits = digits

    def format(self, value):
        if value is None:
            return '-'
        return f'{value:,.{self.digits}f}'


def metrics(sizes):
    k = sizes.memory_mark
    startup = []
    for key, (label, _) in STARTUP_VARIANTS.items():
        via = f', {label}' if label else ''
        fallback = None if key == 'startup' else 'startup'
        startup += [
            Metric(key, 'start-up to first tick' + via, 's', False,
                   [('floor', 1.1), ('3.0', 1.0)], 3, fallback),
            Metric(key + '_once', 'once job, whole run' + via, 's', False,
                   [('floor', 1.1), ('3.0', 1.0)], 3,
                   fallback and fallback + '_once'),
            Metric(key + '_cpu', 'once job, CPU time (user+sys)' + via, 's',
                   False, [], 3, fallback and fallback + '_cpu'),
        ]
    return startup + [
        Metric('ticks', f'empty ticks ({sizes.ticks:,})', 'ticks/s', True,
               [('3.0', 4.0), ('floor', 0.4)], 0),
        Metric('ticks_principal', 'empty ticks, principal', 'ticks/s', True,
               [('3.0', 4.0), ('floor', 0.4)], 0),
        Metric('writes', f'writing ticks ({sizes.writes:,})', 'ticks/s',
               True, [('floor', 0.9)], 0),
        Metric('peritem', f'transaction_per_item ({sizes.items:,})',
               'items/s', True, [('floor', 0.9)], 0),
        Metric('sigterm', f'SIGTERM to exit, ticks={sizes.signal_ticks}',
               's', False, [('abs', 0.1)], 3),
        Metric('rss_mark', f'RSS at tick {k:,}', 'MB', False, [], 1),
        Metric('rss_growth', f'RSS growth, tick {k:,} to end', 'MB', False,
               [('floor', 1.2)], 1),
        Metric('rss_peak', f'RSS peak ({sizes.memory_ticks:,} ticks)', 'MB',
               False, [('3.0', 0.85)], 1),
    ]


def ratio(a, b):
    if a is None or b is None or b <= 0:
        return None
    return a / b


def evaluate(metric, medians):
    """The targets as text and whether all are met (None: not measured)."""
    if not metric.targets:
        return '(no target: to read the others)', None
    texts, met = [], True
    sign = '≥' if metric.higher_is_better else '≤'
    for against, limit in metric.targets:
        if against == 'abs':
            texts.append(f'{sign} {limit:g} {metric.unit}')
            value = medians.get('this')
        else:
            texts.append(f'{sign} {limit:g}× {against}')
            value = ratio(medians.get('this'), medians.get(against))
        if value is None:
            met = None if met is not False else False
        elif not (value >= limit if metric.higher_is_better
                  else value <= limit):
            met = False
    return ', '.join(texts), met


def table(bench, elapsed):
    header = ['figure', 'unit', 'this', '3.0', 'floor', 'this÷3.0',
              'this÷floor', 'target', 'met']
    rows = []
    summary = {}
    for metric in metrics(bench.sizes):
        values = dict(bench.values.get(metric.fallback, {}))
        values.update(bench.values.get(metric.key, {}))
        medians = {impl: statistics.median(values[impl])
                   for impl in IMPLEMENTATIONS if values.get(impl)}
        target, met = evaluate(metric, medians)
        rows.append([
            metric.label, metric.unit,
            *(metric.format(medians.get(impl)) for impl in IMPLEMENTATIONS),
            *(f'{r:.2f}' if r is not None else '-' for r in (
                ratio(medians.get('this'), medians.get('3.0')),
                ratio(medians.get('this'), medians.get('floor')))),
            target, {True: 'yes', False: 'NO', None: '-'}[met]])
        summary[metric.key] = dict(
            label=metric.label, unit=metric.unit, medians=medians,
            values=values, met=met, higher_is_better=metric.higher_is_better)
    widths = [max(len(row[i]) for row in [header] + rows)
              for i in range(len(header))]
    rule = '  '.join('=' * w for w in widths)
    lines = [rule, '  '.join(h.ljust(w) for h, w in zip(header, widths)),
             rule]
    for row in rows:
        lines.append('  '.join(
            cell.ljust(w) if i in (0, 1, 7) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    lines.append(rule)
    load = ' '.join(f'{x:.1f}' for x in os.getloadavg())
    notes = [
        f'Medians of {bench.sizes.startup_runs} start-up runs and'
        f' {bench.sizes.runs} runs of scenarios 2-5 (3.0: one in 5);'
        f' {bench.sizes.memory_runs} run of 6, the three side by side'
        + (' (--quick: a smoke run, not a measurement)'
           if bench.sizes.quick else '') + '.',
        'Databases: FileStorage '
        + ('on disk.' if bench.runs_dir.startswith(WORK)
           else f'on a tmpfs ({TMPFS}): commits do not wait for the disk.'),
        f'Python {platform.python_version()}, {os.cpu_count()} CPUs,'
        f' load average at the end {load}; whole run {elapsed:.0f} s.',
    ]
    for impl in ('this', '3.0'):
        notes.append(f'{impl}: ' + ', '.join(
            f'{name} {version}'
            for name, version in bench.versions[impl].items()))
    for name, message in bench.failures.items():
        notes.append(f'FAILED {name}: {message}')
    return '\n'.join(lines + [''] + notes) + '\n', summary


# -- helpers --

def read(path):
    with open(path) as f:
        return f.read()


def cpu_seconds():
    """The CPU time of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def versions(python):
    names = ['gocept.runner', 'ZODB', 'transaction', 'zope.app.appsetup',
             'zope.component', 'persistent']
    proc = subprocess.run(
        [python, '-c', 'import sys, json, importlib.metadata as m;'
         ' print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))',
         *names], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--quick', action='store_true',
        help='a short smoke run: few runs, little work')
    parser.add_argument(
        '--on-disk', action='store_true',
        help=f'keep the databases in benchmarks/work/, not in {TMPFS}')
    parser.add_argument(
        '--output',
        help='where to write results.txt and results.png (default:'
             ' benchmarks/, with --quick benchmarks/work/)')
    options = parser.parse_args()
    output = options.output or (WORK if options.quick else HERE)
    began = time.monotonic()
    bench = Bench(Sizes(options.quick), options.on_disk)
    bench.setup()
    try:
        for function in SCENARIOS:
            bench.scenario(function)
    finally:
        bench.cleanup()
    text, summary = table(bench, time.monotonic() - began)
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, 'results.txt'), 'w') as f:
        f.write(text)
    summary_path = os.path.join(WORK, 'results.json')
    with open(summary_path, 'w') as f:
        json.dump(summary, f, indent=1)
    subprocess.run(
        [bench.python['this'], os.path.join(HERE, 'chart.py'), summary_path,
         os.path.join(output, 'results.png')], check=True)
    print(text)
    return 1 if bench.failures else 0


if __name__ == '__main__':
    sys.exit(main())
