"""The jobs of the current site's database (on a Zope 4+ instance: of the
current request's): a job's status and result."""

import time

import zope.component.hooks

from gocept.runner import environment
from gocept.runner.jobs import record
from gocept.runner.jobs.store import jobs_of


class NoSite(RuntimeError):
    """Jobs are put and looked up within a site stored in a database (in a
    request, in a runner's tick); there is none."""


class NoResult(LookupError):
    """A job has no result to give: it is unknown (or no longer kept), or
    not done."""


def context():
    """The object that jobs are put and looked up within: the current
    site, if it is stored in a database; else, in a process of a Zope 4+
    instance, the nearest object stored in a database that the current
    request published (the OFS application is no component site).
    Raises NoSite if there is neither."""
    site = zope.component.hooks.getSite()
    if getattr(site, '_p_jar', None) is not None:
        return site
    zopeapp = environment.zope_loaded()
    obj = None if zopeapp is None else zopeapp.published()
    if obj is None:
        raise NoSite(
            'No site stored in a database: jobs are put and looked up'
            ' within one (in a request, or in a runner\'s tick)')
    return obj


def site_jobs(create=False):
    """The Jobs container of the database that context() is stored in
    (see gocept.runner.jobs.store.jobs_of)."""
    return jobs_of(context()._p_jar, create=create)


def get(job_id):
    """The record of the job `job_id` (a Job), or None."""
    jobs = site_jobs()
    return None if jobs is None else jobs.get(job_id)


def status(job_id):
    """The status of the job `job_id`: 'pending', 'delayed' (pending, but
    not due yet: its eta, or its next retry, is to come), 'running',
    'done', 'failed', or None for an unknown id (or a done job no longer
    kept)."""
    job = get(job_id)
    return None if job is None else job.status(time.time())


def result(job_id):
    """The return value of the done job `job_id`, while it is kept (see
    Jobs.keep_done).  Raises NoResult for a job that is not done or not
    known."""
    job = get(job_id)
    if job is None:
        raise NoResult(f'No job {job_id} (unknown, or no longer kept)')
    if job.state != record.DONE:
        raise NoResult(f'Job {job.describe()} is {status(job_id)}, not done')
    return job.result
