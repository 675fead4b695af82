"""The metrics of schedules, among those of a worker process that has
metrics (``--metrics``, ``--metrics-file``; see gocept.runner.metrics):

``gocept_runner_schedule_last_success_timestamp_seconds{schedule}``
    when a job of the schedule last succeeded (Unix time; 0: never);
``gocept_runner_schedule_next_run_timestamp_seconds{schedule}``
    when its next occurrence is (Unix time).

As its workers last saw the schedules' records (see
gocept.runner.jobs.scheduler.Scheduler.seen): every worker process of the
database gives the same figures, a second or so apart.

This module imports prometheus_client: only a process with metrics
imports it (see gocept.runner.jobs.worker.WorkerMiddleware).
"""

import prometheus_client.core

from gocept.runner.jobs.scheduler import Scheduler
from gocept.runner.metrics import Exporter


LAST_SUCCESS = 'gocept_runner_schedule_last_success_timestamp_seconds'
NEXT_RUN = 'gocept_runner_schedule_next_run_timestamp_seconds'


def export(process, entries):
    """Export the figures of the schedules of `entries` with the metrics
    of `process`, if it has any."""
    exporter = next((middleware for middleware in process.middleware
                     if isinstance(middleware, Exporter)), None)
    if exporter is None or not entries:
        return
    collector = next((c for c in exporter.collectors
                      if isinstance(c, Collector)), None)
    if collector is None:
        collector = Collector()
        exporter.add(collector)
    for entry in entries:
        if entry.name not in collector.names:
            collector.names.append(entry.name)


class Collector:
    """The figures of the schedules named in `names`."""

    def __init__(self):
        self.names = []

    def describe(self):
        return self._families([])

    def collect(self):
        return self._families(self.names)

    def _families(self, names):
        core = prometheus_client.core
        last_success = core.GaugeMetricFamily(
            LAST_SUCCESS, 'When a job of the schedule last succeeded (Unix'
            ' time; 0: never).', labels=['schedule'])
        next_run = core.GaugeMetricFamily(
            NEXT_RUN, 'When the next occurrence of the schedule is (Unix'
            ' time).', labels=['schedule'])
        for name in list(names):
            seen = Scheduler.seen.get(name)
            if seen is None:
                continue
            success, occurrence = seen
            last_success.add_metric([name], success or 0)
            next_run.add_metric([name], occurrence)
        return [last_success, next_run]
