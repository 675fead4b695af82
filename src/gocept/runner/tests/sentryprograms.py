"""Runners and jobs for the tests of reporting to Sentry and of the log
context (test_sentry, test_logging).

Run a runner as ``python -m gocept.runner.tests.sentryprograms PROGRAM
-C ZOPE_CONF``: it runs as its decorator says and exits with the runner's
status.  Job workers are jobprograms' (``jobprograms.start``).
"""

import logging
import sys

from ZODB.POSException import ConflictError

import gocept.runner
from gocept.runner.decorators import appmain
from gocept.runner.decorators import once
from gocept.runner.jobs import job


log = logging.getLogger(__name__)

MODULE = 'gocept.runner.tests.sentryprograms'


@once(principal='zope.mgr')
def succeed():
    """Log a line and commit."""
    log.info('succeeding')


@once(principal='zope.mgr')
def fail():
    """Log a line, then fail."""
    log.info('failing')
    raise ValueError('the once run fails')


@appmain(ticks=0, principal='zope.mgr')
def fail_once():
    """Fail in the first tick; in the second, raise a conflict, which is
    tried again and commits; end in the third."""
    fail_once.calls += 1
    if fail_once.calls == 1:
        raise ValueError('the first tick fails')
    if fail_once.calls == 2:
        raise ConflictError('a conflict, tried again')
    if fail_once.calls == 3:
        return None
    return gocept.runner.Exit


fail_once.calls = 0


@job(retries=1, retry_pause=0.1)
def broken(token):
    """Log a line, then fail, always."""
    log.info('job %s runs', token)
    raise ValueError(f'the job fails: {token}')


@job(retries=0)
def conflicted(counter):
    """Raise a ConflictError in the first attempt of the run (which the
    worker tries again), then count."""
    log.info('conflicted runs')
    if not getattr(conflicted, 'raised', False):
        conflicted.raised = True
        raise ConflictError('a conflict, tried again')
    counter.count += 1


if __name__ == '__main__':
    # The workers under this module's name (their monitor slugs say it),
    # not __main__'s.
    from gocept.runner.tests import sentryprograms
    getattr(sentryprograms, sys.argv.pop(1))()  # runs as a program, exits
