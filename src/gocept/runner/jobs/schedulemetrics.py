"""The metrics of schedules, among those of a worker process that has
metrics (``--metrics``, ``--metrics-file``; see gocept.runner.metrics):

``gocept_runner_schedule_last_success_timestamp_seconds{schedule}``
    when a job of the schedule last succeeded (Unix time; 0: never);
``gocept_runner_schedule_next_run_timestamp_seconds{schedule}``
    when its next occurrence is (Unix time).

As its workers last saw the schedules' records: every worker process of
the database gives the same figures, a second or so apart.
"""

import threading
import weakref

from gocept.runner.jobs.scheduler import Scheduler


LAST_SUCCESS = 'gocept_runner_schedule_last_success_timestamp_seconds'
NEXT_RUN = 'gocept_runner_schedule_next_run_timestamp_seconds'

# The registries that have a Collector.
_exported = weakref.WeakSet()
_lock = threading.Lock()


def export(process, entries):
    """Add the schedules of `entries` to the metrics of `process` (the
    registry of its Exporter), if it has metrics."""
    for middleware in getattr(process, 'middleware', ()):
        registry = getattr(middleware, 'registry', None)
        if registry is None:
            continue
        with _lock:
            if registry in _exported:
                continue
            _exported.add(registry)
        registry.register(Collector([entry.name for entry in entries]))


class Collector:
    """The figures of the schedules named `names`, for prometheus_client.
    """

    def __init__(self, names):
        self.names = names

    def collect(self):
        # Only a process with metrics has a Collector: prometheus_client
        # is imported by then (and costs the others nothing).
        from prometheus_client.core import GaugeMetricFamily
        last_success = GaugeMetricFamily(
            LAST_SUCCESS, 'When a job of the schedule last succeeded (Unix'
            ' time; 0: never).', labels=['schedule'])
        next_run = GaugeMetricFamily(
            NEXT_RUN, 'When the next occurrence of the schedule is (Unix'
            ' time).', labels=['schedule'])
        for name in self.names:
            seen = Scheduler.seen.get(name)
            if seen is None:
                continue
            success, occurrence = seen
            last_success.add_metric([name], success or 0)
            next_run.add_metric([name], occurrence)
        return [last_success, next_run]
