"""The job functions of benchmarks/schedules.py."""

from gocept.runner.jobs import periodic


@periodic(1, retries=0)
def every_second():
    """Nothing: the benchmark looks at when each occurrence ran."""


@periodic('0 3 1 1 *')
def yearly():
    """Nothing: a schedule that does not occur while the benchmark runs."""
