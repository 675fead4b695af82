#!/usr/bin/env python3
"""Benchmark: what the metrics of the job queue cost, on 100,000 pending
jobs.

    .venv/bin/python benchmarks/job_depth.py [--quick]

Run it with a Python that has this checkout and its ``metrics`` and
``zeo`` extras.  It puts JOBS pending jobs (a tenth of them delayed) into
a FileStorage, then, on that FileStorage and on a ZEO server serving it,
times in a connection of its own:

- ``jobs.depth(now)`` (what a worker process's heartbeat reads every few
  seconds when it serves metrics), with the connection's cache cold
  (after every object left it) and warm (the reads after that), against
  ``len(jobs)``, which reads every shard too;
- a scrape of what a worker process serves, with the jobs' figures (20
  job names, the depth as read) and without them;

and counts what the reads leave in the connection's cache.

Each figure is the CPU time of the reading thread, the median of ROUNDS
reads, with the lowest and the highest (on ZEO, without the server's).
Writes benchmarks/job-depth-results.txt (--quick: 10,000 jobs, to
benchmarks/work/).
"""

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

import prometheus_client
import transaction
import ZODB
import ZODB.FileStorage
from ZEO.ClientStorage import ClientStorage

import gocept.runner.metrics
from gocept.runner.jobs import counts
from gocept.runner.jobs import metrics
from gocept.runner.jobs import store
from gocept.runner.jobs.record import Job
from gocept.runner.jobs.worker import work
from gocept.runner.testing import ZEOServer


HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, 'work')
# Pending jobs (full, quick); reads of each figure.
JOBS = (100_000, 10_000)
ROUNDS = 7
BATCH = 10_000


def put_jobs(path, count):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    now = time.time()
    with db.transaction() as connection:
        store.jobs_of(connection, create=True)
    for start in range(0, count, BATCH):
        with db.transaction() as connection:
            jobs = store.jobs_of(connection)
            for number in range(start, min(count, start + BATCH)):
                # A tenth delayed by an hour.
                eta = now + 3600 if number % 10 == 0 else now - number / 100
                jobs.put(Job(f'{number:032x}', f'app.jobs:job{number % 20}',
                             (number,), eta=eta))
    db.close()


def timed(function, rounds=ROUNDS, before=None):
    """The CPU seconds of this thread in each of `rounds` calls of
    `function` (`before` called before each, untimed): on a busy machine
    its wall time would be mostly the other processes'."""
    seconds = []
    for _ in range(rounds):
        if before is not None:
            before()
        started = time.thread_time()
        function()
        seconds.append(time.thread_time() - started)
    return seconds


def measure(db, count):
    """{figure: seconds of each read} on `db`."""
    connection = db.open()
    try:
        jobs = store.jobs_of(connection)
        depth = jobs.depth(time.time())
        assert depth.pending + depth.delayed == count, depth
        cold = timed(lambda: jobs.depth(time.time()),
                     before=connection.cacheMinimize)
        warm = timed(lambda: jobs.depth(time.time()))
        # What the reads leave in the connection's cache: the buckets, and
        # a ghost of each job they hold (the jobs are not loaded).
        cache = connection._cache
        cached = (cache.cache_non_ghost_count,
                  len(cache) - cache.cache_non_ghost_count)
        length = timed(lambda: len(jobs))
        # The metrics a worker process serves: its loop's and its own,
        # then with the jobs' figures (20 job names).
        exporter = gocept.runner.metrics.Exporter()
        exporter.measure(work).worker = 'gocept.runner.jobs.worker.work'
        plain = timed(lambda: prometheus_client.generate_latest(
            exporter.registry))
        collector = metrics.Collector()
        thread = counts.Counts()
        for number in range(20):
            thread.done(f'app.jobs:job{number}', 0.01 * number)
        collector.add(thread)
        collector.queue.state = (depth, time.time())
        exporter.add(collector)
        scrape = timed(lambda: prometheus_client.generate_latest(
            exporter.registry))
    finally:
        transaction.abort()
        connection.close()
    return {'len(jobs), warm': (length, None),
            'jobs.depth(now), cold cache': (cold, 'len(jobs), warm'),
            'jobs.depth(now), warm cache': (warm, 'len(jobs), warm'),
            'a scrape without the jobs\' figures': (plain, None),
            'a scrape with them': (
                scrape, 'a scrape without the jobs\' figures'),
            'cached': cached}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--quick', action='store_true')
    args = parser.parse_args()
    count = JOBS[args.quick]
    directory = tempfile.mkdtemp()
    results = {}
    try:
        path = os.path.join(directory, 'Data.fs')
        started = time.monotonic()
        put_jobs(path, count)
        print(f'{count} jobs put in {time.monotonic() - started:.0f} s',
              file=sys.stderr)
        db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
        results['FileStorage'] = measure(db, count)
        db.close()
        server = ZEOServer(directory)
        server.start()
        try:
            db = ZODB.DB(ClientStorage(('127.0.0.1', server.port)))
            results['ZEO'] = measure(db, count)
            db.close()
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory)
    lines = [
        f'The metrics of the job queue: {count:,} pending jobs in 64 shards'
        ' (a tenth delayed), read in a connection of its own;',
        f'CPU milliseconds of the reading thread, median of {ROUNDS} reads'
        ' (lowest - highest).',
        f'{platform.python_implementation()} {platform.python_version()},'
        f' {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at the end,'
        f' {time.strftime("%Y-%m-%d", time.gmtime())}.', '']
    for storage, figures in results.items():
        lines.append(storage)
        loaded, ghosts = figures.pop('cached')
        lines.append(f'  in the cache after the reads: {loaded:,} objects'
                     f' loaded, {ghosts:,} ghosts')
        for figure, (seconds, reference) in figures.items():
            median = statistics.median(seconds)
            line = (f'  {figure:<36} {median * 1000:8.2f} ms  ('
                    f'{min(seconds) * 1000:.2f} - {max(seconds) * 1000:.2f})')
            if reference is not None:
                base = statistics.median(figures[reference][0])
                line += f'  {median / base:.1f} x {reference}'

            lines.append(line)
        lines.append('')
    text = '\n'.join(lines)
    print(text)
    target = (os.path.join(WORK, 'job-depth-results.txt') if args.quick
              else os.path.join(HERE, 'job-depth-results.txt'))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, 'w') as f:
        f.write(text)


if __name__ == '__main__':
    main()
