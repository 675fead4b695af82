"""Prometheus metrics of jobs, beside those of the loops
(gocept.runner.metrics) in a worker process that serves or writes
metrics.

Two kinds of figures, from two places:

- What this process's workers did, by job name: the counts that each
  worker's loop (and the heartbeat, for the jobs of a dead process) keeps
  in gocept.runner.jobs.counts, summed when Prometheus scrapes.
- The queue of the database: how many jobs are pending, delayed, running
  and failed, and how long the earliest due job has waited.  Every worker
  process on the database gives the same figures.  Counting them reads
  every bucket of the queue's BTrees: of 100,000 pending jobs, a fifth of
  a millisecond once they are in the connection's cache, but half a
  second of loading when they are not (benchmarks/job_depth.py).  No
  scrape should wait for that, and no job behind it: the process's
  heartbeat (gocept.runner.jobs.liveness) reads them after each beat, in
  its own thread on its own connection, every few seconds (whether the
  workers are idle or busy: a queue that grows because every worker is
  busy is what the figures are for), and a scrape gives what it read
  last.  The age of the earliest due job is told at the scrape from when
  that job became due, so that it grows between two reads, also while
  the storage is away.

This module imports prometheus_client: only a process with metrics
imports it (see gocept.runner.jobs.worker.WorkerMiddleware).
"""

import time

import prometheus_client.core

from gocept.runner.jobs import registry
from gocept.runner.metrics import Exporter
from gocept.runner.metrics import histogram_buckets


# The label value of each attempt outcome (record.OUTCOMES).
OUTCOMES = {'time limit': 'time_limit',
            'died in a batch': 'died_in_a_batch'}
# The states of the queue's depth, in the order of store.Depth.
STATES = ('pending', 'delayed', 'running', 'failed')


def export(process, counts, liveness):
    """Export the jobs' figures with the metrics of `process`, if it has
    any: `counts` (a worker's Counts, from its thread) and those of
    `liveness` (the heartbeat of the worker's database), which then reads
    the queue."""
    exporter = next((middleware for middleware in process.middleware
                     if isinstance(middleware, Exporter)), None)
    if exporter is None:
        return
    collector = next((c for c in exporter.collectors
                      if isinstance(c, Collector)), None)
    if collector is None:
        collector = Collector()
        exporter.add(collector)
    # Every job function's series from the start, at 0: an alert on
    # increase() sees the first failure, too.
    for name in registry.names():
        counts.of(name)
    collector.add(counts)
    collector.add(liveness.counts)
    liveness.queue = collector.queue


class Queue:
    """What a heartbeat read of the queue last: `state` is None or
    (store.Depth, when it was read in Unix time), replaced as a whole."""

    state = None


class Collector:
    """The jobs' figures of a process (see the module): of the Counts in
    `counts`, and of `queue`."""

    def __init__(self):
        self.counts = []
        self.queue = Queue()

    def add(self, counts):
        """Export the figures of `counts` (a Counts) as well, once."""
        if not any(counts is other for other in self.counts):
            self.counts.append(counts)

    def describe(self):
        return self._families({}, None, 0)

    def collect(self):
        names = {}
        for counts in list(self.counts):
            for name, figures in list(counts.names.items()):
                names.setdefault(name, []).append(figures)
        return self._families(names, self.queue.state, time.time())

    def _families(self, names, queue, now):
        """The families with samples of `names` (the NameCounts of each job
        name) and of `queue` (see Queue) at `now`."""
        core = prometheus_client.core
        families = []

        def family(kind, name, documentation, labels=('job_name',)):
            metric = kind(name, documentation, labels=list(labels))
            families.append(metric)
            return metric

        for figure, documentation in [
                ('done', 'Jobs done by the workers of this process.'),
                ('retried', 'Jobs that failed an attempt in this process'
                            ' and wait to be tried again.'),
                ('failed', 'Jobs that failed for good in this process (or'
                           ' whose dead worker process it found): kept'
                           ' among the failed jobs.')]:
            metric = family(core.CounterMetricFamily,
                            f'gocept_runner_job_{figure}', documentation)
            for name, group in names.items():
                metric.add_metric(
                    [name], sum(getattr(figures, figure) for figures in group))
        attempts = family(
            core.CounterMetricFamily, 'gocept_runner_job_attempts',
            'Attempts of jobs that ended in this process, by outcome.',
            labels=('job_name', 'outcome'))
        for name, group in names.items():
            for outcome in group[0].attempts:
                attempts.add_metric(
                    [name, OUTCOMES.get(outcome, outcome)],
                    sum(figures.attempts[outcome] for figures in group))
        durations = family(
            core.HistogramMetricFamily, 'gocept_runner_job_duration_seconds',
            "Seconds an attempt ran in this process: from the call of the"
            " job's function to the end of its commit, or its failure.")
        for name, group in names.items():
            counts = [sum(column) for column in zip(
                *(list(figures.durations) for figures in group))]
            durations.add_metric([name], histogram_buckets(counts), sum(
                figures.duration_sum for figures in group))
        depth = family(
            core.GaugeMetricFamily, 'gocept_runner_job_queue_depth',
            'Jobs of the database by state, read every few seconds (the'
            ' same in every worker process of the database).',
            labels=('state',))
        age = family(
            core.GaugeMetricFamily,
            'gocept_runner_job_oldest_pending_age_seconds',
            'Seconds since the earliest due pending job became due, 0 if'
            ' none is due (the same in every worker process of the'
            ' database).', labels=())
        read = family(
            core.GaugeMetricFamily,
            'gocept_runner_job_queue_read_timestamp_seconds',
            'When the queue of the database was last read (Unix time).',
            labels=())
        if queue is not None:
            state, when = queue
            for label, number in zip(STATES, state):
                depth.add_metric([label], number)
            age.add_metric([], 0 if state.earliest is None else max(
                0, now - state.earliest))
            read.add_metric([], when)
        return families
