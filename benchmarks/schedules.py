"""Schedules kept by several job worker processes, on ZEO and on
RelStorage/PostgreSQL (issue 27).

    python3 benchmarks/schedules.py [--quick] [--processes N...]
        [--engines E...] [--seconds S]

For 1, 4 and 8 (or N...) ``gocept-jobs work`` processes on a ZEO server
and on a PostgreSQL server (gocept.runner.testing's servers, a fresh
database each time), a schedule every second runs for S seconds (60).
Then, from the jobs it put:

missed   occurrences between the first and the last without a job (goal 0);
doubled  occurrences with more than one job (goal 0);
delay    seconds from an occurrence's time to the start of its job, median
         and 99th percentile (goal: at most 0.1 and 1);
CPU      the CPU of a worker process, in % of a core, over the run.

And what the scheduler costs an idle worker: one worker process with a
schedule that does not occur while it runs, against one without
schedules (the reference), each idle for S seconds, their CPU in % of a
core (goal: the difference under 1 %).

Writes benchmarks/schedules-results.txt (not with --quick).
"""

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import ZODB.config

from gocept.runner import testing
from gocept.runner.jobs import store


HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, 'schedules-results.txt')
ENGINES = ('zeo', 'pg')
NAME = 'schedule_jobs:every_second'
LOG = """\
<eventlog>
  level WARNING
  <logfile>
    path {directory}/workers.log
    format %(asctime)s %(levelname)s %(name)s %(message)s
  </logfile>
</eventlog>
<logger>
  name gocept.runner.jobs
  level DEBUG
  propagate false
  <logfile>
    path {directory}/jobs.log
    format %(asctime)s %(levelname)s %(name)s %(message)s
  </logfile>
</logger>
"""
CONFLICT = 'Schedules: a conflict putting due jobs'


class Server:
    """The database server of an engine, in `directory`."""

    def __init__(self, engine, directory):
        self.engine = engine
        if engine == 'zeo':
            self.server = testing.ZEOServer(directory)
        else:
            self.server = testing.PostgreSQLServer(directory)
        self.server.start()
        self.databases = 0

    def zodb(self):
        """The <zodb> section of a fresh database."""
        if self.engine == 'zeo':
            # A fresh Jobs container, below: the server keeps one file.
            return self.server.zodb_section()
        self.databases += 1
        name = f'schedules{self.databases}'
        self.server.create_database(name)
        return self.server.zodb_section(name)

    def stop(self):
        self.server.stop()


def zope_conf(directory, zodb, schedules):
    path = os.path.join(directory, 'zope.conf')
    lines = ''.join(f'  {name}\n' for name in schedules)
    for name in 'workers.log', 'jobs.log':
        if os.path.exists(os.path.join(directory, name)):
            os.remove(os.path.join(directory, name))
    testing.write_zope_conf(
        directory, zodb, log=LOG.format(directory=directory),
        extra=f'<schedules>\n{lines}</schedules>\n' if lines else '')
    return path


def fresh(zodb):
    """Give the database an empty Jobs container."""
    db = ZODB.config.databaseFromString(zodb)
    try:
        with db.transaction() as connection:
            connection.root()[store.ROOT_KEY] = store.Jobs()
    finally:
        db.close()


def start(conf, count):
    env = dict(os.environ, PYTHONPATH=HERE)
    gocept_jobs = os.path.join(os.path.dirname(sys.executable),
                               'gocept-jobs')
    return [subprocess.Popen([gocept_jobs, 'work', '-C', conf],
                             env=env, cwd=os.path.dirname(conf))
            for _ in range(count)]


def cpu_seconds(pid):
    """The CPU seconds (user and system) of the process `pid` so far."""
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def registered(zodb, count, timeout=300):
    """Wait until `count` worker processes have registered on the
    database, and a second more (their start-up costs CPU)."""
    db = ZODB.config.databaseFromString(zodb)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with db.transaction() as connection:
                if len(store.jobs_of(connection).processes()) >= count:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f'{count} workers did not start')
            time.sleep(0.2)
    finally:
        db.close()
    time.sleep(1)


def run(processes, zodb, seconds):
    """Let `processes` run `seconds` once they have started; stop them;
    return the CPU of each in % of a core over those seconds, and when
    they began and ended."""
    registered(zodb, len(processes))
    before = [cpu_seconds(p.pid) for p in processes]
    began = time.time()
    time.sleep(seconds)
    after = [cpu_seconds(p.pid) for p in processes]
    ended = time.time()
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(120)
    return [100 * (b - a) / (ended - began)
            for a, b in zip(before, after)], began, ended


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def trial(server, count, seconds, directory):
    zodb = server.zodb()
    fresh(zodb)
    conf = zope_conf(directory, zodb, ['schedule_jobs.every_second'])
    cpu, began, ended = run(start(conf, count), zodb, seconds)
    db = ZODB.config.databaseFromString(zodb)
    try:
        with db.transaction() as connection:
            # Those of the measured seconds, less the last, which may not
            # have run before the workers stopped.
            jobs = [job for job in store.jobs_of(connection).records()
                    if job.schedule == NAME and
                    began < job.occurrence < ended - 1]
            occurrences = sorted(job.occurrence for job in jobs)
            delays = [job.attempts[0].started - job.occurrence
                      for job in jobs if job.attempts]
    finally:
        db.close()
    expected = {o for o in range(int(began) + 1, int(ended))
                if o < ended - 1}
    with open(os.path.join(directory, 'jobs.log')) as f:
        conflicts = f.read().count(CONFLICT)
    return dict(
        conflicts=conflicts / max(1, len(occurrences)),
        occurrences=len(set(occurrences)),
        missed=len(expected - set(occurrences)),
        doubled=len(occurrences) - len(set(occurrences)),
        median=statistics.median(delays), p99=percentile(delays, 0.99),
        cpu=statistics.mean(cpu))


def idle(server, seconds, directory, rounds):
    """CPU of an idle worker with a schedule, and without (% of a core):
    the median of `rounds`, the two alternating."""
    result = {'without': [], 'with': []}
    for _ in range(rounds):
        for label, schedules in (('without', []),
                                 ('with', ['schedule_jobs.yearly'])):
            zodb = server.zodb()
            fresh(zodb)
            conf = zope_conf(directory, zodb, schedules)
            (cpu,), _, _ = run(start(conf, 1), zodb, seconds)
            result[label].append(cpu)
    return {label: statistics.median(cpus)
            for label, cpus in result.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true',
                        help='10 s, 1 and 4 processes; no results file')
    parser.add_argument('--processes', type=int, nargs='+')
    parser.add_argument('--engines', nargs='+', choices=ENGINES,
                        default=list(ENGINES))
    parser.add_argument('--seconds', type=float)
    args = parser.parse_args()
    seconds = args.seconds or (10 if args.quick else 60)
    sizes = args.processes or ([1, 4] if args.quick else [1, 4, 8])
    load_before = os.getloadavg()[0]
    began = time.monotonic()
    rows, idles = [], {}
    for engine in args.engines:
        with tempfile.TemporaryDirectory(
                prefix='gocept.runner.bench.', dir='/tmp') as directory:
            os.chmod(directory, 0o755)
            server = Server(engine, directory)
            try:
                for count in sizes:
                    rows.append((engine, count, trial(
                        server, count, seconds, directory)))
                    print(engine, count, rows[-1][2], flush=True)
                idles[engine] = idle(server, seconds, directory,
                                     1 if args.quick else 3)
                print(engine, 'idle', idles[engine], flush=True)
            finally:
                server.stop()
    text = report(rows, idles, seconds, load_before, os.getloadavg()[0],
                  time.monotonic() - began)
    print(text)
    if not args.quick:
        with open(RESULTS, 'w') as f:
            f.write(text)
    failed = [row for row in rows if row[2]['missed'] or row[2]['doubled']]
    return 1 if failed else 0


def report(rows, idles, seconds, load_before, load_after, elapsed):
    names = {'zeo': 'ZEO', 'pg': 'PostgreSQL'}
    lines = [
        'Schedules: a schedule every second, kept by N gocept-jobs work'
        f' processes for {seconds:g} s',
        'missed/doubled: occurrences without a job, with more than one'
        ' (goal: 0);',
        "delay: seconds from an occurrence's time to the start of its job,"
        ' median and 99th percentile (goal: 0.1 and 1);',
        'conflicts: commits of the schedule that conflicted, per'
        ' occurrence (over the whole run, start-up included);',
        'CPU: of a worker process, % of a core, mean of the processes.',
        'Idle: one worker process, idle, without schedules (the reference)'
        ' and with one that does not occur; % of a core, the median of'
        ' rounds alternating.',
        'Measured from when every worker process has registered on the'
        ' database (and a second more).',
        '',
        f'Date: {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())};'
        f' {platform.processor() or platform.machine()},'
        f' {os.cpu_count()} CPUs; Linux {platform.release()}',
        f'Python {platform.python_version()}; load average before'
        f' {load_before:.1f}, after {load_after:.1f}; the run took'
        f' {elapsed:.0f} s.',
        '',
        f'{"engine":<11} {"N":>2}  {"occurrences":>11}  {"missed":>6}'
        f'  {"doubled":>7}  {"median":>7}  {"p99":>6}  {"conflicts":>9}'
        f'  {"CPU":>6}',
    ]
    for engine, count, r in rows:
        lines.append(
            f'{names[engine]:<11} {count:>2}  {r["occurrences"]:>11}'
            f'  {r["missed"]:>6}  {r["doubled"]:>7}  {r["median"]:>7.3f}'
            f'  {r["p99"]:>6.3f}  {r["conflicts"]:>9.2f}'
            f'  {r["cpu"]:>5.1f}%')
    lines.append('')
    lines.append(f'{"engine":<11}  {"without":>8}  {"with":>8}  {"cost":>8}')
    for engine, r in idles.items():
        lines.append(
            f'{names[engine]:<11}  {r["without"]:>7.2f}%  {r["with"]:>7.2f}%'
            f'  {r["with"] - r["without"]:>7.2f}%')
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    sys.exit(main())
