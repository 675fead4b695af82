"""Committing after every item of a batch."""

import functools
import logging
import time

import transaction
from ZODB.POSException import ConflictError

from gocept.runner import retry


log = logging.getLogger(__name__)

# Seconds between two progress lines of a long run.  Runs shorter than this
# log no progress, and their summary at DEBUG only.
PROGRESS_INTERVAL = 60


def transaction_per_item(generator_function):
    """Decorate a generator function that yields callables.

    Each callable is called in a transaction of its own and committed after
    it; what was changed before (by the generator, or by the caller before
    the first item) is committed on its own first.  An item whose commit
    conflicts is retried a few times (see gocept.runner.retry); an item that
    fails for good is aborted and logged, and the next one runs.  Arguments
    are passed through to the generator function.  A run that lasts
    PROGRESS_INTERVAL seconds or longer logs a progress line at INFO every
    PROGRESS_INTERVAL seconds and a summary at the end; shorter runs log
    their summary at DEBUG.
    """
    @functools.wraps(generator_function)
    def run(*args, **kw):
        stats = Statistics(generator_function.__qualname__)
        for item in generator_function(*args, **kw):
            # A retry must not repeat or lose work that is not the item's.
            transaction.commit()
            try:
                _, retried = retry.run(item)
            except ConflictError as e:
                stats.failed += 1
                stats.conflicts += retry.ATTEMPTS
                log.warning('Conflict in %r, transaction aborted after %s'
                            ' attempts: %s', item, retry.ATTEMPTS, e)
            except Exception:
                stats.failed += 1
                log.exception('Error in %r, transaction aborted', item)
            else:
                stats.committed += 1
                stats.conflicts += retried
            stats.progress()
        stats.summary()
    return run


class Statistics:
    """What a run of `transaction_per_item` has done so far."""

    def __init__(self, name):
        self.name = name
        self.committed = self.failed = self.conflicts = 0
        self.started = self.last_progress = time.monotonic()

    def progress(self):
        """Log a progress line if the last is PROGRESS_INTERVAL old."""
        if time.monotonic() - self.last_progress >= PROGRESS_INTERVAL:
            self.last_progress = time.monotonic()
            log.info('%s so far', self)

    def summary(self):
        """Log what the run has done."""
        long_run = self.last_progress > self.started
        log.log(logging.INFO if long_run else logging.DEBUG, '%s', self)

    def __str__(self):
        seconds = time.monotonic() - self.started
        items = self.committed + self.failed
        rate = items / seconds if seconds else 0
        return (f'{self.name}: {self.committed} items committed,'
                f' {self.failed} failed, {self.conflicts} conflicts in'
                f' {seconds:.1f} s ({rate:.1f} items/s)')
