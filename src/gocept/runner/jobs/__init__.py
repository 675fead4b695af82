"""Jobs: functions called later by workers, in transactions of their own.

See docs/reference/jobs.rst for the contract.
"""

from gocept.runner.jobs.lookup import NoResult
from gocept.runner.jobs.lookup import NoSite
from gocept.runner.jobs.lookup import get
from gocept.runner.jobs.lookup import result
from gocept.runner.jobs.lookup import status
from gocept.runner.jobs.registry import job
from gocept.runner.jobs.registry import periodic
from gocept.runner.jobs.timelimit import TimeLimitExceeded
from gocept.runner.jobs.worker import work
from gocept.runner.jobs.worker import workers


__all__ = [
    'NoResult',
    'NoSite',
    'TimeLimitExceeded',
    'get',
    'job',
    'periodic',
    'result',
    'status',
    'work',
    'workers',
]
