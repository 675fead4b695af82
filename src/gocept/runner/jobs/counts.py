"""What the threads of this process did with jobs: counts by job name.

Each worker's loop, and each heartbeat that finds a worker process dead,
counts in a Counts of its own: plain numbers that only its thread
changes, which gocept.runner.jobs.metrics reads when Prometheus scrapes
(prometheus_client's metric objects would take a lock for every change).
A worker counts whether metrics are served or not: a few dictionary
look-ups beside a job's transactions.
"""

from bisect import bisect_left

from gocept.runner.jobs import record


# The buckets (seconds) of a job's run time: those of a tick's
# (gocept.runner.metrics.BUCKETS, which is not imported here: it would
# import prometheus_client into every worker).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
           5, 10, 30, 60, 120, 300, 600, 1800, 3600, float('inf'))


class Counts:
    """What one thread did with jobs: a NameCounts for each job name
    (`names`)."""

    def __init__(self):
        self.names = {}

    def of(self, name):
        """The NameCounts of the jobs named `name`."""
        counts = self.names.get(name)
        if counts is None:
            # One assignment: a scrape's copy of the dictionary has it
            # whole or not at all.
            counts = self.names[name] = NameCounts()
        return counts

    def done(self, name, seconds):
        """A job named `name` is done; its attempt ran `seconds`."""
        counts = self.of(name)
        counts.done += 1
        counts.attempts['done'] += 1
        counts.ran(seconds)

    def ended(self, ending, seconds=None):
        """An attempt ended without success, and the job with it as the
        attempts.Ending `ending` says; the attempt ran `seconds` (None:
        it did not run here)."""
        counts = self.of(ending.job.name)
        counts.attempts[ending.attempt.outcome] += 1
        if ending.what == 'retry':
            counts.retried += 1
        elif ending.what == 'failed':
            counts.failed += 1
        if seconds is not None:
            counts.ran(seconds)


class NameCounts:
    """The jobs of one name: how many were `done`, `retried` (after an
    attempt that counted against their retries) and `failed` for good;
    their `attempts` by outcome (see record.OUTCOMES); how long the
    attempts ran (`durations`, how many fell into each of BUCKETS, not
    cumulative, and `duration_sum`)."""

    def __init__(self):
        self.done = self.retried = self.failed = 0
        self.attempts = dict.fromkeys(record.OUTCOMES, 0)
        self.durations = [0] * len(BUCKETS)
        self.duration_sum = 0.0

    def ran(self, seconds):
        self.durations[bisect_left(BUCKETS, seconds)] += 1
        self.duration_sum += seconds
