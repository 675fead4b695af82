"""How an attempt that did not succeed ends: the job is queued again, at
once or after a pause, or it fails for good.

An attempt whose failure is the job's own (see record.COUNTED) counts
against its retries: the job runs again after a pause that grows with
each retry, from the job's `retry_pause` (RETRY_PAUSE by default) to
MAX_RETRY_PAUSE, or, after its retries, it is kept among the failed jobs.
Any other (a conflict, an interruption) is queued again at once.
"""

import itertools
import logging
import random

from gocept.runner import retry


log = logging.getLogger('gocept.runner.jobs')

#: Seconds before a failed job runs again, the first time (the default of
#: a job's retry_pause); the pause doubles with each retry.
RETRY_PAUSE = 10
#: The longest pause before a failed job runs again, in seconds.
MAX_RETRY_PAUSE = 3600


def pause(first, tries):
    """The seconds to wait before retry number `tries` (from 1) of a job
    whose first pause is `first`.

    Each pause is half of its ceiling (a Backoff's pause) and a random part
    of the other half: waits grow with every retry for certain, and jobs
    that failed together do not run again together.
    """
    ceilings = retry.Backoff(first, max(first, MAX_RETRY_PAUSE))
    ceiling = next(itertools.islice(ceilings, tries - 1, None))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Ending:
    """What became of a job whose attempt ended without success: `what`
    is 'queued' (again at once), 'retry' (after `pause` seconds) or
    'failed'."""

    def __init__(self, job, attempt, what, pause=0):
        self.job = job
        self.attempt = attempt
        self.what = what
        self.pause = pause

    def log(self):
        """Log one line naming the job; the traceback at DEBUG."""
        job, attempt = self.job, self.attempt
        if attempt.outcome == 'refused':
            log.error('Job %s refused: %s; kept among the failed jobs',
                      job.describe(), attempt.error)
            return
        why = f'{attempt.outcome}: {attempt.error}'
        if self.what == 'failed':
            log.error('Job %s failed for good after %s attempts (%s); kept'
                      ' among the failed jobs', job.describe(), job.tries,
                      why)
        elif self.what == 'retry':
            log.info('Job %s failed in attempt %s of %s (%s); trying again'
                     ' in %.1f seconds', job.describe(), job.tries,
                     job.retries + 1, why, self.pause)
        else:
            log.info('Job %s not done (%s); queued again', job.describe(),
                     why)
        if attempt.traceback:
            log.debug('Job %s, attempt %s:\n%s', job.describe(),
                      attempt.number, attempt.traceback.rstrip())


def end(jobs, job, outcome, now, error, traceback=None, transaction=None):
    """End the running attempt of `job` in `jobs` with the `outcome` that
    is not 'done'; queue the job again or fail it; return the Ending."""
    attempt = job.end_attempt(outcome, now, error, traceback, transaction)
    if not attempt.counted:
        jobs.requeue(job, now)
        return Ending(job, attempt, 'queued')
    if outcome == 'refused' or job.tries > job.retries:
        jobs.fail(job)
        return Ending(job, attempt, 'failed')
    seconds = pause(job.retry_pause, job.tries)
    jobs.requeue(job, now + seconds)
    return Ending(job, attempt, 'retry', seconds)


def refuse(jobs, job, worker, now):
    """Fail `job`, whose function is not registered, without running it;
    return the Ending."""
    job.begin_attempt(worker, now)
    return end(jobs, job, 'refused', now,
               f'no job function {job.name} is registered (only functions'
               ' decorated with gocept.runner.jobs.job run)')
