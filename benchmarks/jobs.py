#!/usr/bin/env python3
"""Job queues side by side: gocept.runner.jobs, procrastinate, RQ, dramatiq.

    python3 benchmarks/jobs.py [--quick] [--systems S...] [--workers N...]
        [--modes M...] [--jobs J] [--fed-jobs F] [--sleep-jobs S]
        [--side-jobs W] [--latency-jobs K] [--repeat R] [--output PATH]
        [--from-log PATH]

Each system runs from its own virtualenv in benchmarks/work/ (made on
first use, from PyPI; see venvs.py) against servers this script starts on
free ports in temporary directories: gocept.runner.jobs on a ZEO server
(fresh for each trial) and on RelStorage, on the PostgreSQL server that
procrastinate uses too (a fresh database for each trial); RQ and dramatiq
on a Redis server (Debian's redis-server, flushed for each trial).  No
server syncs to disk, so that none pays for a durability the others skip:
PostgreSQL runs with fsync off, Redis without persistence, and the ZEO
server's FileStorage (which syncs every commit) is on a tmpfs (/dev/shm).

"N workers" are N worker processes of one worker each, for every system:
each gets the same processes to schedule on the machine's cores, and RQ
has no other form.  At 8 workers the other form is measured too, where a
system has it: one process of 8 workers (gocept-jobs work --workers 8,
procrastinate's concurrency 8, dramatiq's 8 threads).

Trials, each on an empty queue with the workers started and idle first:

batch   COUNT jobs put at once (one transaction, or one batch), drained;
fed     jobs put one at a time (a transaction each) by a producer while
        the workers take them;
alone   the fed no-op jobs put by the producer with no worker running: the
        most jobs a second that any fed row of the system can finish;
for the workloads noop (the job does nothing), sleep (it waits 20 ms) and,
at 8 workers, write (it returns a result that the system stores; a
gocept.runner job also adds one to a counter of its own in the database).
Then the latency: one worker process, idle; a job at a time is put, and
the seconds from its put to its start are taken (gocept.runner: also to
the start of the take that commits the job's attempt before it runs).

Every job appends its call to a log outside any transaction (see
jobqueues/calllog.py): a job no call of which ran to its end is lost; for
RQ, dramatiq and procrastinate, which run a job at least once, a job with
two such calls was done twice.  gocept.runner.jobs repeats a call whose
commit conflicted, and keeps only the last call's effects: its jobs are
checked in the database (each done, with one done attempt, and with the
write workload, its counter at 1).  Waste is the share of calls that were
repeats.  Writes benchmarks/jobs-results.txt (--quick: to
benchmarks/work/jobs-results-quick.txt), and each trial's figures as a
line of JSON to standard error, from which --from-log makes the table
again.  This script uses the standard library only; the jobs and their
workers run in the virtualenvs.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import venvs


HERE = os.path.dirname(os.path.abspath(__file__))
QUEUES = os.path.join(HERE, 'jobqueues')
sys.path.insert(0, QUEUES)
import calllog  # noqa: E402 (in QUEUES, which the workers import too)


RESULTS = os.path.join(HERE, 'jobs-results.txt')
QUICK_RESULTS = os.path.join(venvs.WORK, 'jobs-results-quick.txt')
SITE_ZCML = os.path.join(HERE, 'site.zcml')
TIMEOUT = 300
STARTUP_TIMEOUT = 180

SYSTEMS = ('zeo', 'pg', 'procrastinate', 'rq', 'dramatiq')
MODES = ('batch', 'fed', 'alone', 'latency')
TITLES = {
    'zeo': 'gocept.runner ZEO',
    'pg': 'gocept.runner RelStorage',
    'procrastinate': 'procrastinate',
    'rq': 'RQ',
    'dramatiq': 'dramatiq',
}
# What gocept.runner.jobs is measured against (the goals of issue 26).
OURS = ('zeo', 'pg')
PEERS = ('procrastinate', 'rq')
WASTE_GOAL = 0.10
LATENCY_GOAL = 0.050


def postgresql_bin():
    """The directory of PostgreSQL's programs (as gocept.runner.testing
    finds it)."""
    initdb = shutil.which('initdb')
    if initdb is not None:
        return os.path.dirname(os.path.realpath(initdb))
    versions = [v for v in os.listdir('/usr/lib/postgresql') if v.isdigit()]
    return f'/usr/lib/postgresql/{max(versions, key=int)}/bin'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def accepts(port):
    try:
        socket.create_connection(('127.0.0.1', port), 1).close()
    except OSError:
        return False
    return True


def wait_until(condition, what, process=None, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f'{what}: exited with {process.returncode}')
        if time.monotonic() > deadline:
            raise RuntimeError(f'{what}: timed out after {timeout} s')
        time.sleep(0.05)


def stop(process, signum=signal.SIGTERM, timeout=15):
    """Stop `process` with `signum`, kill it after `timeout` seconds;
    whether it stopped by itself."""
    if process.poll() is not None:
        return True
    process.send_signal(signum)
    try:
        process.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False


class PostgreSQL:
    """A throwaway PostgreSQL cluster (fsync off), run as the user postgres
    when we are root."""

    def __init__(self):
        self.bin = postgresql_bin()
        # Under /tmp, where the user postgres reaches it.
        self.directory = tempfile.mkdtemp(prefix='jobbench-pg.', dir='/tmp')
        self.port = free_port()
        self.as_user = {}
        if os.geteuid() == 0:
            shutil.chown(self.directory, 'postgres', 'postgres')
            self.as_user = {'user': 'postgres', 'group': 'postgres',
                            'extra_groups': []}
        data = os.path.join(self.directory, 'data')
        subprocess.run(
            [os.path.join(self.bin, 'initdb'), '-D', data, '-U', 'postgres',
             '-A', 'trust', '-E', 'UTF8', '--locale', 'C', '--no-sync'],
            check=True, stdout=subprocess.DEVNULL, cwd=self.directory,
            **self.as_user)
        self.log = open(os.path.join(self.directory, 'postgresql.log'), 'ab')
        self.process = subprocess.Popen(
            [os.path.join(self.bin, 'postgres'), '-D', data, '-h',
             '127.0.0.1', '-p', str(self.port), '-k', self.directory, '-F',
             '-c', 'max_connections=200'],
            stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, **self.as_user)
        wait_until(self.ready, 'PostgreSQL', self.process)

    def ready(self):
        return subprocess.run(
            [os.path.join(self.bin, 'pg_isready'), '-q', '-h', '127.0.0.1',
             '-p', str(self.port)]).returncode == 0

    def dsn(self, dbname):
        return (f'host=127.0.0.1 port={self.port} dbname={dbname}'
                f' user=postgres')

    def _client(self, program, dbname):
        subprocess.run([os.path.join(self.bin, program), '-h', '127.0.0.1',
                        '-p', str(self.port), '-U', 'postgres', dbname],
                       check=True)

    def create(self, dbname):
        self._client('createdb', dbname)

    def drop(self, dbname):
        subprocess.run(
            [os.path.join(self.bin, 'dropdb'), '-h', '127.0.0.1', '-p',
             str(self.port), '-U', 'postgres', '--force', '--if-exists',
             dbname], check=True)

    def close(self):
        stop(self.process, signal.SIGINT)
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class Redis:
    """A private redis-server without persistence."""

    def __init__(self):
        self.directory = tempfile.mkdtemp(prefix='jobbench-redis.')
        self.port = free_port()
        self.log = open(os.path.join(self.directory, 'redis.log'), 'ab')
        self.process = subprocess.Popen(
            ['redis-server', '--port', str(self.port), '--bind', '127.0.0.1',
             '--dir', self.directory, '--save', '', '--appendonly', 'no'],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: accepts(self.port), 'redis-server', self.process)

    def flush(self):
        with socket.create_connection(('127.0.0.1', self.port), 5) as s:
            s.sendall(b'FLUSHALL\r\n')
            if not s.recv(100).startswith(b'+OK'):
                raise RuntimeError('redis-server: FLUSHALL failed')

    def close(self):
        stop(self.process)
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class System:
    """A job system under trial: its virtualenv, its module in jobqueues/
    and how its workers start."""

    venv = None
    module = None
    # The forms of workers it has: 'processes' (N of one worker each),
    # 'threads' (one process of N workers).
    forms = ('processes', 'threads')

    def __init__(self, servers, python=None):
        """`servers`: the servers of the run, by kind; `python`: that of
        the system's virtualenv (made if need be), unless given."""
        self.servers = servers
        self.python = python or venvs.python(self.venv)
        self.bin = os.path.dirname(self.python)

    def prepare(self, directory):
        """An empty queue for the trial in `directory`; return the
        environment of its processes."""
        env = dict(os.environ, JOBBENCH_DIR=directory, PYTHONPATH=QUEUES)
        env.pop('JOBBENCH_WORKER', None)
        return env

    def command(self, env, *args):
        """Run the module's command `args`; return its JSON answer."""
        result = subprocess.run(
            [self.python, os.path.join(QUEUES, self.module)] + [
                str(arg) for arg in args],
            env=env, stdout=subprocess.PIPE, check=True, timeout=TIMEOUT)
        return json.loads(result.stdout.decode().strip().splitlines()[-1])

    def workers(self, env, count, form):
        """Start `count` workers in `form`; return their processes and how
        many of them say they are ready."""
        env = dict(env, JOBBENCH_WORKER='1')
        log = open(os.path.join(env['JOBBENCH_DIR'], 'workers.log'), 'ab')
        if form == 'threads':
            processes = [self.popen(self.worker_args(count), env, log)]
        else:
            processes = [self.popen(self.worker_args(1), env, log)
                         for _ in range(count)]
        log.close()
        return processes, len(processes)

    def popen(self, args, env, log):
        return subprocess.Popen(args, env=env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=QUEUES)

    def stop(self, process):
        """Stop the worker `process` as its system wants it (SIGTERM);
        whether it stopped by itself."""
        return stop(process)

    def finish(self):
        """Clean up after a trial."""


class GoceptRunner(System):

    venv = 'this'
    module = 'gocept_tasks.py'

    def prepare(self, directory):
        env = super().prepare(directory)
        self.conf = os.path.join(directory, 'zope.conf')
        with open(self.conf, 'w') as f:
            f.write(f'site-definition {SITE_ZCML}\n{self.zodb(directory)}'
                    '<eventlog>\n  level WARNING\n  <logfile>\n'
                    f'    path {directory}/gocept.log\n'
                    '  </logfile>\n</eventlog>\n')
        self.command(env, 'setup', 0, 'noop')
        return env

    def command(self, env, *args):
        return super().command(env, self.conf, *args)

    def worker_args(self, count):
        return [os.path.join(self.bin, 'gocept-jobs'), 'work', '-C',
                self.conf, '--workers', str(count), '--import',
                'gocept_tasks']


class OnZEO(GoceptRunner):

    def zodb(self, directory):
        port = free_port()
        self.log = open(os.path.join(directory, 'zeo.log'), 'ab')
        # On a tmpfs: FileStorage syncs each commit to disk, which the
        # other servers here do not (see the module).
        self.data = tempfile.mkdtemp(
            prefix='jobbench-zeo.',
            dir='/dev/shm' if os.path.isdir('/dev/shm') else None)
        self.server = subprocess.Popen(
            [self.python, '-m', 'ZEO.runzeo', '-a', f'127.0.0.1:{port}',
             '-f', os.path.join(self.data, 'Data.fs')],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: accepts(port), 'ZEO', self.server)
        return (f'<zodb>\n  <zeoclient>\n    server 127.0.0.1:{port}\n'
                '  </zeoclient>\n</zodb>\n')

    def finish(self):
        stop(self.server)
        self.log.close()
        shutil.rmtree(self.data, ignore_errors=True)


class OnRelStorage(GoceptRunner):

    trials = 0

    def zodb(self, directory):
        OnRelStorage.trials += 1
        self.dbname = f'gocept{self.trials}'
        postgresql = self.servers['postgresql']
        postgresql.create(self.dbname)
        return ('%import relstorage\n<zodb>\n  <relstorage>\n'
                '    <postgresql>\n'
                f'      dsn {postgresql.dsn(self.dbname)}\n'
                '    </postgresql>\n  </relstorage>\n</zodb>\n')

    def finish(self):
        self.servers['postgresql'].drop(self.dbname)


class Procrastinate(System):

    venv = 'procrastinate'
    module = 'procrastinate_tasks.py'
    trials = 0

    def prepare(self, directory):
        env = super().prepare(directory)
        Procrastinate.trials += 1
        self.dbname = f'procrastinate{self.trials}'
        postgresql = self.servers['postgresql']
        postgresql.create(self.dbname)
        env['JOBBENCH_PG'] = postgresql.dsn(self.dbname)
        self.command(env, 'schema')
        return env

    def worker_args(self, count):
        return [self.python, 'procrastinate_tasks.py', 'work', str(count)]

    def finish(self):
        self.servers['postgresql'].drop(self.dbname)


class OnRedis(System):

    def prepare(self, directory):
        env = super().prepare(directory)
        self.servers['redis'].flush()
        env['JOBBENCH_REDIS'] = str(self.servers['redis'].port)
        return env


class RQ(OnRedis):

    venv = 'rq'
    module = 'rq_tasks.py'
    forms = ('processes',)

    def worker_args(self, count):
        assert count == 1
        return [self.python, 'rq_tasks.py', 'work']

    def stop(self, process):
        # RQ's worker, idle in its dequeue, may go on waiting after the
        # SIGTERM of its warm shutdown; a second signal, a second later
        # (RQ ignores one sooner), is its cold shutdown.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(2)
            return True
        except subprocess.TimeoutExpired:
            return stop(process)


class Dramatiq(OnRedis):

    venv = 'dramatiq'
    module = 'dramatiq_tasks.py'

    def workers(self, env, count, form):
        # dramatiq's own command starts the processes (and the threads).
        env = dict(env, JOBBENCH_WORKER='1')
        processes, threads = (1, count) if form == 'threads' else (count, 1)
        with open(os.path.join(env['JOBBENCH_DIR'], 'workers.log'),
                  'ab') as log:
            process = self.popen(
                [os.path.join(self.bin, 'dramatiq'), 'dramatiq_tasks',
                 '--processes', str(processes), '--threads', str(threads)],
                env, log)
        return [process], processes


CLASSES = {'zeo': OnZEO, 'pg': OnRelStorage, 'procrastinate': Procrastinate,
           'rq': RQ, 'dramatiq': Dramatiq}


def trial(system, directory, mode, workload, count, workers, form):
    """One trial; return its figures."""
    os.makedirs(directory)
    env = system.prepare(directory)
    if mode == 'alone':
        try:
            answer = system.command(env, 'produce', count, workload)
        finally:
            system.finish()
        return {'rate': count / (answer['last'] - answer['first']),
                'calls': 0, 'repeated': 0, 'stopped': True, 'lost': 0,
                'twice': 0}
    processes = []
    try:
        processes, expected = system.workers(env, workers, form)
        wait_until(lambda: calllog.ready_processes(directory) >= expected,
                   'The workers', None, STARTUP_TIMEOUT)
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f'A worker exited with'
                                   f' {process.returncode}')
        # Let them reach their loops and go idle.
        time.sleep(1)
        if mode == 'latency':
            answer = system.command(env, 'latency', count, workload)
        else:
            answer = system.command(
                env, 'put' if mode == 'batch' else 'produce', count,
                workload)
        deadline = time.monotonic() + TIMEOUT
        while len({seq for seq, *_ in calllog.calls(directory)}) < count:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        check = system.command(env, 'check', count, workload)
        if 'lost' in check:
            # The last commits may still be under way.
            for _ in range(50):
                if not check['lost']:
                    break
                time.sleep(0.1)
                check = system.command(env, 'check', count, workload)
        stopped = all([system.stop(process) for process in processes])
        processes = []
    finally:
        for process in processes:
            stop(process, signal.SIGKILL)
        system.finish()
    calls = calllog.calls(directory)
    return figures(mode, count, calls, answer, check, stopped)


def figures(mode, count, calls, answer, check, stopped):
    """The figures of a trial from its calls and the systems' answers."""
    per_job = {}
    for seq, *_ in calls:
        per_job[seq] = per_job.get(seq, 0) + 1
    result = {
        'calls': len(calls),
        'repeated': len(calls) - len(per_job),
        'stopped': stopped,
        'check': check,
    }
    if 'lost' in check:
        # gocept.runner.jobs: counted in the database.
        result['lost'], result['twice'] = check['lost'], check['twice']
        result['repeated_attempts'] = check['repeated']
        result['attempts'] = check['attempts']
    else:
        result['lost'] = count - len(per_job)
        result['twice'] = sum(1 for n in per_job.values() if n > 1)
    if mode == 'latency':
        result['latencies'] = answer['latencies']
        result['latency'] = statistics.median(answer['latencies'])
        if 'to_take' in answer:
            result['to_take'] = answer['to_take']
        return result
    if not calls:
        result['rate'] = 0
        return result
    ended = max(ended for _, _, ended, _ in calls)
    if mode == 'batch':
        began = min(started for _, started, _, _ in calls)
    else:
        began = answer['first']
        result['put_rate'] = count / (answer['last'] - answer['first'])
    result['seconds'] = ended - began
    result['rate'] = count / (ended - began)
    return result


def plan(args):
    """The trials: (system, mode, workload, count, workers, form)."""
    trials = []
    for name in args.systems:
        for workers in args.workers:
            for workload in ('noop', 'sleep'):
                for mode in ('batch', 'fed'):
                    if workload == 'noop':
                        count = args.jobs if mode == 'batch' else \
                            args.fed_jobs
                    else:
                        count = args.sleep_jobs * workers
                    trials.append((name, mode, workload, count, workers,
                                   'processes'))
        if 8 in args.workers:
            trials.append((name, 'batch', 'write', args.side_jobs, 8,
                           'processes'))
            if 'threads' in CLASSES[name].forms:
                for workload in ('noop', 'sleep', 'write'):
                    count = (args.sleep_jobs * 8 if workload == 'sleep'
                             else args.side_jobs)
                    trials.append((name, 'batch', workload, count, 8,
                                   'threads'))
        trials.append((name, 'alone', 'noop', args.fed_jobs, 0,
                       'processes'))
        trials.append((name, 'latency', 'noop', args.latency_jobs, 1,
                       'processes'))
    # The spread: the drain of no-op jobs by the most workers, again, once
    # every system has had its turn.
    for _ in range(args.repeat - 1):
        for name in args.systems:
            trials.append((name, 'batch', 'noop', args.jobs,
                           max(args.workers), 'processes'))
    return [t for t in trials if t[1] in args.modes]


def cpu():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def versions(systems):
    """The versions of the packages and servers measured."""
    packages = {'this': ('gocept.runner', 'ZODB', 'ZEO', 'RelStorage'),
                'procrastinate': ('procrastinate', 'psycopg'),
                'rq': ('rq', 'redis'), 'dramatiq': ('dramatiq', 'redis')}
    found = []
    for venv in dict.fromkeys(CLASSES[name].venv for name in systems):
        python = venvs.python(venv)
        names = packages[venv]
        out = subprocess.run(
            [python, '-c', 'import importlib.metadata as m, sys;'
             'print(", ".join(f"{n} {m.version(n)}" for n in sys.argv[1:]))']
            + list(names), stdout=subprocess.PIPE, text=True).stdout.strip()
        found.append(out)
    programs = []
    if {'pg', 'procrastinate'} & set(systems):
        programs.append(os.path.join(postgresql_bin(), 'postgres'))
    if {'rq', 'dramatiq'} & set(systems):
        programs.append('redis-server')
    for program in programs:
        found.append(subprocess.run(
            [program, '--version'], stdout=subprocess.PIPE,
            text=True).stdout.strip())
    return '; '.join(dict.fromkeys(found))


def ratio(ours, theirs):
    if not theirs:
        return '-'
    return f'{ours / theirs:.2f}'


def spread(values):
    """The median of `values` and, when there are several, their range in
    % of it."""
    median = statistics.median(values)
    if len(values) < 2 or not median:
        return median, ''
    return median, f'±{50 * (max(values) - min(values)) / median:.0f}%'


def report(args, results, load_before, load_after, elapsed):
    """The text of the results file."""
    def get(name, mode, workload, workers, form='processes'):
        return results.get((name, mode, workload, workers, form), [])

    def rate(name, mode, workload, workers, form='processes'):
        """The rate of the trials, and how to show it: with its spread;
        fed, with the producer's rate."""
        found = get(name, mode, workload, workers, form)
        if not found:
            return None, '-'
        value, plusminus = spread([r['rate'] for r in found])
        if mode == 'fed':
            put = statistics.median(r['put_rate'] for r in found)
            return value, f'{value:.0f} ({put:.0f})'
        return value, f'{value:.0f}{plusminus}'

    systems = [name for name in SYSTEMS if name in args.systems]
    lines = [
        'gocept.runner.jobs beside procrastinate, RQ and dramatiq'
        + (' (a --quick run: few jobs, for trying the script, not for'
           ' conclusions)' if args.quick else ''),
        '',
        f'Date: {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())};'
        f' {cpu()}, {os.cpu_count()} CPUs; {platform.system()}'
        f' {platform.release()}; Python {platform.python_version()}',
        versions(systems),
        f'Load average before {load_before:.1f}, after {load_after:.1f};'
        f' the run took {elapsed / 60:.0f} minutes.'
        if elapsed == elapsed else 'Load average and duration not logged.',
        '',
        'Jobs per second.  N workers are N worker processes of one worker'
        ' each (RQ: SimpleWorker;',
        'dramatiq: --processes N --threads 1; procrastinate: concurrency'
        ' 1).  batch: jobs put at once',
        f'({args.jobs} no-op jobs, {args.sleep_jobs} x N jobs of 20 ms),'
        ' timed from the first start to the last end;',
        f'fed: put one at a time ({args.fed_jobs} no-op jobs, the same'
        ' count of 20 ms jobs) by a producer while',
        'the workers take them, timed from the first put to the last end.'
        '  "/pr", "/rq": ratios of',
        'the gocept.runner rate to procrastinate\'s and RQ\'s of the same'
        ' row, measured in this run.',
        'No server syncs to disk: PostgreSQL runs with fsync off, Redis'
        ' without persistence, ZEO on a tmpfs.',
    ]
    if args.repeat > 1:
        lines.append(
            f'One trial a row, but {args.repeat} of the no-op batch at'
            f' {max(args.workers)} workers (their median, ± half their'
            ' range in % of it:')
        lines.append('the spread to expect of the other rows).')
    else:
        lines.append('One trial a row (no trial repeated: no spread'
                     ' measured).')
    lines.append('')
    columns = [('workload', 8), ('mode', 5), ('N', 2)]
    columns += [(TITLES[name].replace('gocept.runner ', ''), 13)
                for name in systems]
    ratios = [(o, p) for o in OURS if o in systems
              for p in PEERS if p in systems]
    columns += [(f'{o}/{p[:2]}', 7) for o, p in ratios]
    lines.append('  '.join(f'{t:>{w}}' if i > 2 else f'{t:<{w}}'
                           for i, (t, w) in enumerate(columns)))
    goals = []
    # The producers' rates alone, and the comparisons of fed rows that no
    # worker could meet: the peer finished more jobs a second than our
    # producer alone put.
    alone = {name: rate(name, 'alone', 'noop', 0)[0] for name in systems}
    beyond = []
    for workload in ('noop', 'sleep'):
        for mode in ('batch', 'fed'):
            for workers in args.workers:
                cells = [workload, mode, str(workers)]
                rates = {}
                for name in systems:
                    rates[name], text = rate(name, mode, workload, workers)
                    cells.append(text)
                for o, p in ratios:
                    cells.append(ratio(rates[o] or 0, rates[p]))
                    if rates[o] is not None and rates[p] is not None:
                        goals.append(rates[o] >= rates[p])
                        if mode == 'fed' and alone.get(o) is not None and \
                                rates[p] > alone[o]:
                            beyond.append(rates[o] < rates[p])
                lines.append('  '.join(
                    f'{c:>{w}}' if i > 2 else f'{c:<{w}}'
                    for i, (c, (_, w)) in enumerate(zip(cells, columns))))
    if any(value is not None for value in alone.values()):
        lines += [
            '',
            f'The producer alone: the {args.fed_jobs} fed no-op jobs put one'
            ' at a time with no worker running.',
            'No fed row can finish jobs faster than its producer puts them;'
            ' beside workers, which share',
            'the cores and the server with it, the producer puts fewer (the'
            ' put rates in brackets above).',
            '',
            f'{"system":<25}  {"puts/s":>8}',
        ]
        for name in systems:
            if alone[name] is not None:
                lines.append(f'{TITLES[name]:<25}  {alone[name]:8.0f}')
    lines += [
        '',
        'At 8 workers, batch: jobs per second and waste (repeated calls in %'
        ' of all calls; gocept.runner:',
        'also the attempts that did not end done, in % of all attempts),'
        ' with 8 processes of one worker',
        'and with one process of 8 (gocept-jobs work --workers 8,'
        ' procrastinate concurrency 8, dramatiq',
        '--threads 8).  write: the job returns a result, which the system'
        ' keeps where it keeps results',
        '(gocept.runner: in the job\'s record, and the job adds one to a'
        ' counter of its own; RQ: in Redis;',
        'procrastinate and dramatiq keep none).  Jobs: the no-op row of 8'
        f' processes is the first table\'s ({args.jobs}),',
        f'the other no-op and write rows {args.side_jobs} jobs, sleep'
        f' {args.sleep_jobs * 8}.',
        '',
        f'{"system":<25}  {"workload":<8}  {"8 processes":>20}'
        f'  {"1 process of 8":>20}',
    ]
    waste_met = []
    for name in systems:
        for workload in ('noop', 'sleep', 'write'):
            cells = []
            for form in ('processes', 'threads'):
                found = get(name, 'batch', workload, 8, form)
                if not found:
                    cells.append('-')
                    continue
                value, _ = spread([r['rate'] for r in found])
                calls = sum(r['calls'] for r in found)
                repeated = sum(r['repeated'] for r in found)
                waste = repeated / calls if calls else 0
                text = f'{value:.0f}/s {100 * waste:4.1f}%'
                if 'attempts' in found[0]:
                    attempts = sum(r['attempts'] for r in found)
                    others = sum(r['repeated_attempts'] for r in found)
                    share = others / attempts if attempts else 0
                    text += f' {100 * share:3.1f}%'
                    waste = max(waste, share)
                if name in OURS:
                    waste_met.append(waste <= WASTE_GOAL)
                cells.append(text)
            lines.append(f'{TITLES[name]:<25}  {workload:<8}'
                         f'  {cells[0]:>20}  {cells[1]:>20}')
    lines += [
        '',
        f'Put-to-start latency on an idle system: one worker process, a'
        f' job at a time ({args.latency_jobs} jobs,',
        'each after a pause of 0.2 to 0.5 s), from the return of the put'
        ' (the commit) to the job\'s start.',
        'gocept.runner: the median split in two, from the put to the start'
        ' of the worker\'s take, and',
        'from there to the job\'s start: the take reads the job and'
        ' commits its attempt before it runs.',
        '',
        f'{"system":<25}  {"median":>8}  {"max":>8}  {"to take":>8}'
        f'  {"take":>8}',
    ]
    latencies = {}
    for name in systems:
        found = get(name, 'latency', 'noop', 1)
        if not found:
            continue
        if all('latencies' in r for r in found):
            values = [v for r in found for v in r['latencies']]
            longest = f'{1000 * max(values):6.1f}ms'
        else:
            # From the log of an older run, which gave the median only.
            values = [r['latency'] for r in found]
            longest = '-'
        latencies[name] = statistics.median(values)
        split = ''
        if all('to_take' in r for r in found):
            parts = [(to_take, value - to_take) for r in found
                     for to_take, value in zip(r['to_take'], r['latencies'])]
            split = ''.join(f'  {1000 * statistics.median(part):6.1f}ms'
                            for part in zip(*parts))
        lines.append(f'{TITLES[name]:<25}  {1000 * latencies[name]:6.1f}ms'
                     f'  {longest:>8}{split}')
    lost = sum(r['lost'] for rs in results.values() for r in rs)
    twice = sum(r['twice'] for rs in results.values() for r in rs)
    unstopped = sum(1 for rs in results.values() for r in rs
                    if not r['stopped'])
    lines += [
        '',
        f'Checked in every trial ({sum(map(len, results.values()))}):'
        f' jobs lost: {lost}; jobs done twice: {twice};'
        f' trials whose workers',
        f'did not stop within 15 s of SIGTERM (RQ: of a second one):'
        f' {unstopped}.',
        '',
        'The goals of issue 26 for gocept.runner.jobs (ZEO and RelStorage):',
    ]

    def met(flag):
        return 'met' if flag else 'NOT MET'
    if goals:
        lines.append(f'- jobs/s at least procrastinate\'s and RQ\'s in every'
                     f' row: {met(all(goals))} ({sum(goals)} of'
                     f' {len(goals)} comparisons)')
        if beyond:
            lines.append(f'  of those not met, {sum(beyond)} are fed rows in'
                         ' which the peer finished more jobs a second')
            lines.append('  than our producer alone put')
    ours = {n: v for n, v in latencies.items() if n in OURS}
    if ours:
        peers = [latencies[n] for n in PEERS if n in latencies]
        worst = max(ours.values())
        measured = ', '.join(f'{TITLES[n]} {v * 1000:.0f} ms'
                             for n, v in ours.items())
        lines.append(f'- median put-to-start latency at most'
                     f' {LATENCY_GOAL * 1000:.0f} ms:'
                     f' {met(worst <= LATENCY_GOAL)} ({measured});')
        if peers:
            lines.append(f'  below procrastinate\'s and RQ\'s:'
                         f' {met(all(worst < p for p in peers))}')
    lines.append(f'- 0 jobs lost, 0 done twice (every system):'
                 f' {met(not lost and not twice)}')
    if waste_met:
        lines.append(f'- waste at most {WASTE_GOAL:.0%} of worker calls at 8'
                     f' workers: {met(all(waste_met))}')
    return '\n'.join(lines) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true',
                        help='few jobs, 1 and 8 workers: a smoke run')
    parser.add_argument('--systems', nargs='+', choices=SYSTEMS,
                        default=list(SYSTEMS))
    parser.add_argument('--workers', type=int, nargs='+')
    parser.add_argument('--modes', nargs='+', choices=MODES,
                        default=list(MODES),
                        help='the kinds of trials (all): --modes latency'
                             ' measures only the latency')
    parser.add_argument('--jobs', type=int,
                        help='no-op jobs put at once (5000)')
    parser.add_argument('--fed-jobs', type=int,
                        help='no-op jobs fed one at a time (500)')
    parser.add_argument('--sleep-jobs', type=int,
                        help='jobs of 20 ms per worker (100)')
    parser.add_argument('--side-jobs', type=int,
                        help='no-op and writing jobs of the table at 8'
                             ' workers (2000)')
    parser.add_argument('--latency-jobs', type=int,
                        help='jobs put one at a time into idle workers (20)')
    parser.add_argument('--repeat', type=int,
                        help='trials of the no-op batch at the most'
                             ' workers, for the spread (2)')
    parser.add_argument('--output', help='where to write the table')
    parser.add_argument(
        '--from-log', metavar='PATH',
        help='no trials: the table of a run whose standard error went to'
             ' PATH (give its options again)')
    args = parser.parse_args()
    defaults = ({'workers': [1, 8], 'jobs': 500, 'fed_jobs': 200,
                 'sleep_jobs': 25, 'side_jobs': 500, 'latency_jobs': 5,
                 'repeat': 1}
                if args.quick else
                {'workers': [1, 2, 4, 8], 'jobs': 5000, 'fed_jobs': 500,
                 'sleep_jobs': 100, 'side_jobs': 2000, 'latency_jobs': 20,
                 'repeat': 2})
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    output = args.output or (QUICK_RESULTS if args.quick else RESULTS)
    if redis_needed(args) and shutil.which('redis-server') is None:
        sys.exit('jobs.py: redis-server is not installed'
                 ' (apt-get install redis-server)')
    if args.from_log:
        return from_log(args, output)
    work = os.path.join(venvs.WORK, 'jobs')
    shutil.rmtree(work, ignore_errors=True)
    servers = {}
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    results = {}
    try:
        if {'pg', 'procrastinate'} & set(args.systems):
            servers['postgresql'] = PostgreSQL()
        if redis_needed(args):
            servers['redis'] = Redis()
        systems = {name: CLASSES[name](servers) for name in args.systems}
        trials = plan(args)
        for number, (name, mode, workload, count, workers, form) in \
                enumerate(trials, 1):
            directory = os.path.join(work, f'{number}-{name}')
            result = trial(systems[name], directory, mode, workload, count,
                           workers, form)
            shutil.rmtree(directory)
            key = (name, mode, workload, workers, form)
            results.setdefault(key, []).append(result)
            print(json.dumps([number, len(trials), key, result]),
                  file=sys.stderr, flush=True)
    finally:
        for server in servers.values():
            server.close()
    run = [load_before, os.getloadavg()[0], time.monotonic() - started]
    print(json.dumps(['run'] + run), file=sys.stderr, flush=True)
    write(args, output, results, *run)


def write(args, output, results, load_before, load_after, elapsed):
    text = report(args, results, load_before, load_after, elapsed)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, 'w') as f:
        f.write(text)
    print(text)


def from_log(args, output):
    """Write the table of the trials that a run wrote to its standard
    error, saved at args.from_log."""
    results = {}
    run = [float('nan')] * 3
    with open(args.from_log) as f:
        for line in f:
            if not line.startswith('['):
                continue
            found = json.loads(line)
            if found[0] == 'run':
                run = found[1:]
                continue
            _, _, key, result = found
            results.setdefault(tuple(key), []).append(result)
    write(args, output, results, *run)


def redis_needed(args):
    return bool({'rq', 'dramatiq'} & set(args.systems))


if __name__ == '__main__':
    main()
