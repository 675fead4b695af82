"""Scheduled job functions for the tests of schedules (see
test_schedules_workers); their workers are those of jobprograms.
"""

import persistent

from gocept.runner.jobs import job
from gocept.runner.jobs import periodic
from gocept.runner.tests.jobprograms import root
from gocept.runner.tests.jobprograms import spin


MODULE = 'gocept.runner.tests.schedulejobs'


class Runs(persistent.Persistent):
    """How often the jobs of a schedule ran to their commit."""

    count = 0


def count(name):
    runs = root().get(name)
    if runs is None:
        runs = root()[name] = Runs()
    runs.count += 1


@periodic(1, retries=0)
def every_second():
    """Count a run."""
    count('every_second')


@periodic(1, retries=0, catch_up='all')
def every_second_all():
    """Count a run; missed occurrences run late, one by one."""
    count('every_second_all')


@periodic(1, retries=0, catch_up='none')
def every_second_none():
    """Count a run; missed occurrences are skipped."""
    count('every_second_none')


@periodic(1, retries=0)
def slow():
    """Run for 2.5 seconds: the next two occurrences find it running."""
    spin(2.5)
    count('slow')


@periodic(1, retries=0, overlap=True)
def slow_overlapping():
    """Run for 2.5 seconds, beside the jobs of the next occurrences."""
    spin(2.5)
    count('slow_overlapping')


@periodic('30 2 * * *', timezone='Europe/Berlin')
def nightly():
    """A job at 02:30 in Berlin."""


@job
def unscheduled():
    """A job function without a schedule."""


def not_a_job():
    """Not a job function."""
