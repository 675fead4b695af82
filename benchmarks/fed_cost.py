#!/usr/bin/env python3
"""What a job fed one at a time costs the machine.

    .venv/bin/python benchmarks/fed_cost.py [--jobs N] [--workers N...]
        [--engines zeo pg] [--output PATH]

Run it with a Python that has this checkout and its ``zeo`` and
``relstorage`` extras.  For each engine, a ZEO server or RelStorage on a
PostgreSQL server (gocept.runner.testing's, fresh each time), and each
set of workers (N: N processes of ``gocept-jobs work`` of one worker
each, 0: the producer alone; PxT: P processes of T workers each), it
starts the workers, waits until they idle, and has a producer put N
no-op jobs of benchmarks/jobqueues/gocept_tasks.py one at a
time, a transaction each, as the fed rows of benchmarks/jobs.py do.  Until
the last job is done it measures jobs per second and the CPU time a job
costs: in the server (all its processes), in the worker processes (and,
for processes of one worker, how much of that in threads other than the
one that takes and runs jobs: the storage client's I/O thread, which
hears of every commit, and the heartbeat), and in the producer.  The
machine's cores cannot give more jobs a second than cores / CPU a job:
the "bound" column, the most the fed rows of this engine could reach at
that cost if no process ever waited for another.
Writes benchmarks/fed-cost-results.txt.
"""

import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import time

from profile_jobs import QUEUES
from profile_jobs import configure
from profile_jobs import serving


HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, 'fed-cost-results.txt')
sys.path.insert(0, QUEUES)
import calllog  # noqa: E402  (jobqueues/, which the workers import too)


TIMEOUT = 300


def threads(pid):
    """The CPU seconds of the process `pid`: its main thread's, and its
    other threads' together."""
    main = other = 0
    tick = os.sysconf('SC_CLK_TCK')
    for path in glob.glob(f'/proc/{pid}/task/*/stat'):
        try:
            with open(path) as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue  # a thread that ended
        seconds = (int(fields[11]) + int(fields[12])) / tick
        if path.split('/')[4] == str(pid):
            main += seconds
        else:
            other += seconds
    return main, other


def wait_until(condition, what, timeout):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f'{what}: not within {timeout} seconds')
        time.sleep(0.05)


def feed(server, directory, count, workers, threads_each=1):
    """Feed `count` jobs to `workers` worker processes of `threads_each`
    workers each; return the figures."""
    conf, env = configure(server, directory)
    tasks = [sys.executable, os.path.join(QUEUES, 'gocept_tasks.py'), conf]
    subprocess.run(tasks + ['setup', '0', 'noop'], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    processes = [subprocess.Popen(
        [sys.executable, '-m', 'gocept.runner.jobs', 'work', '-C', conf,
         '--workers', str(threads_each), '--import', 'gocept_tasks'],
        env=dict(env, JOBBENCH_WORKER='1'), cwd=QUEUES)
        for _ in range(workers)]
    try:
        wait_until(lambda: calllog.ready_processes(directory) >= workers,
                   'The workers', TIMEOUT)
        time.sleep(2)  # until they idle
        server_before = server.cpu()
        before = [threads(process.pid) for process in processes]
        answer = json.loads(subprocess.run(
            tasks + ['produce', str(count), 'noop'], env=env, check=True,
            stdout=subprocess.PIPE).stdout.decode().splitlines()[-1])
        if workers:
            wait_until(lambda: len({seq for seq, *_ in calllog.calls(
                directory)}) >= count, 'The jobs', TIMEOUT)
            ended = max(ended for _, _, ended, _ in calllog.calls(directory))
        else:
            ended = answer['last']
        server_cpu = server.cpu() - server_before
        after = [threads(process.pid) for process in processes]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)
    main = sum(a[0] - b[0] for a, b in zip(after, before))
    other = sum(a[1] - b[1] for a, b in zip(after, before))
    per_job = [seconds * 1000 / count for seconds in (
        server_cpu, main + other, answer['cpu'])]
    return {'rate': count / (ended - answer['first']), 'per_job': per_job,
            'other': other * 1000 / count if threads_each == 1 else None}


def workers_spec(text):
    """N or PxT: (processes, workers each)."""
    processes, _, each = text.partition('x')
    try:
        return int(processes), int(each or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not N or PxT: {text!r}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--jobs', type=int, default=1000)
    parser.add_argument('--workers', type=workers_spec, nargs='+',
                        default=[(0, 1), (1, 1), (2, 1), (4, 1), (8, 1),
                                 (1, 8)],
                        help='N (processes of one worker) or PxT (P'
                             ' processes of T workers)')
    parser.add_argument('--engines', nargs='+', choices=('zeo', 'pg'),
                        default=['zeo', 'pg'])
    parser.add_argument('--output', default=RESULTS)
    args = parser.parse_args()
    cores = os.cpu_count()
    lines = [
        'What a job fed one at a time costs: CPU milliseconds a job',
        '',
        f'Date: {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())};'
        f' {cores} CPUs; Python {platform.python_version()};'
        f' load average before {os.getloadavg()[0]:.1f}',
        f'{args.jobs} no-op jobs put one at a time, a transaction each, by'
        ' a producer; N worker processes',
        '(0: the producer alone; 1x8: one process of 8 workers).  workers:'
        ' all their threads;',
        '"I/O": of that, in processes of one worker, the threads other than'
        ' the one that runs jobs',
        '(the storage client\'s I/O, which hears of every commit; the'
        ' heartbeat).  bound: cores / total,',
        'the most jobs a second the cores allow at that cost.',
        '',
        f'{"engine":<11} {"N":>3} {"jobs/s":>7} {"server":>7}'
        f' {"workers":>8} {"I/O":>6} {"producer":>8} {"total":>7}'
        f' {"bound":>6}',
    ]
    for engine in args.engines:
        for workers, threads_each in args.workers:
            with serving(engine) as (server, directory):
                work = os.path.join(directory, 'work')
                os.mkdir(work)
                found = feed(server, work, args.jobs, workers, threads_each)
            total = sum(found['per_job'])
            server_ms, workers_ms, producer_ms = found['per_job']
            other = ('-' if found['other'] is None
                     else f'{found["other"]:.2f}')
            cells = (f'{server_ms:7.2f} {workers_ms:8.2f} {other:>6}'
                     f' {producer_ms:8.2f}')
            label = (str(workers) if threads_each == 1
                     else f'{workers}x{threads_each}')
            line = (f'{engine:<11} {label:>3} {found["rate"]:7.0f}'
                    f' {cells} {total:7.2f} {cores * 1000 / total:6.0f}')
            print(line, flush=True)
            lines.append(line)
    with open(args.output, 'w') as f:
        f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
