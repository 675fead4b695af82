"""Reporting to Sentry (the sentry extra: sentry-sdk).

A run reports when a DSN is configured: in zope.conf's ``<sentry>``, or in
the SDK's own environment variable SENTRY_DSN.  What zope.conf's
``<sentry>`` says wins over the environment (as the SDK's own options to
``sentry_sdk.init`` do); what it leaves out, the SDK reads from SENTRY_DSN,
SENTRY_ENVIRONMENT and SENTRY_RELEASE.  Without a DSN, this module is not
imported and the SDK not initialised (see gocept.runner.assembly).

- Every tick that fails with an error is one event, and every attempt of a
  job that fails with an error or runs past its time limit: tagged with
  the worker, the tick number, the principal and the site, and for a job
  its name, id and attempt.  Conflicts, which are tried again, and storage
  outages, which the loop waits out, are none.
- A ``once`` run and each attempt of a job that a schedule put report
  Crons check-ins: in_progress, then ok or error, under the slug of the
  worker's or job's dotted name, '.' and ':' replaced by '-', unless
  ``<sentry>`` has a ``monitor`` line for it.

The runner's own lines about those failures (of the loggers OWN_LOGGERS)
are kept from the SDK's logging integration, which would send each a
second time without the tags.  Whatever fails in reporting is logged once
as a WARNING (then at DEBUG) and changes nothing about the run.
"""

import logging
import time

import sentry_sdk
import sentry_sdk.crons
import sentry_sdk.integrations.logging

from gocept.runner.middleware import Middleware


log = logging.getLogger(__name__)

# The loggers of the lines about failed ticks and jobs.
OWN_LOGGERS = ('gocept.runner.runner', 'gocept.runner.jobs')

# sentry-sdk 2 has ignore_logger for events; 3 gave that name to its
# Sentry Logs and calls this one ignore_logger_for_events.
_ignore_logger = getattr(
    sentry_sdk.integrations.logging, 'ignore_logger_for_events',
    sentry_sdk.integrations.logging.ignore_logger)

# The settings of <sentry> that are the SDK's options.
SDK_OPTIONS = ('dsn', 'environment', 'release', 'sample_rate')

# Outcomes of a job attempt that are events.
JOB_EVENTS = ('error', 'time limit')


# The loggers of the connection pool that the SDK's transport sends with.
TRANSPORT_LOGGERS = ('urllib3.connectionpool', 'urllib3.connection')
# The thread the SDK's transport sends in.
TRANSPORT_THREAD = 'sentry-sdk.BackgroundWorker'


def init(settings):
    """Initialise the SDK with the `settings` of ``<sentry>`` (see
    gocept.runner.config.sentry); the environment gives the rest."""
    sentry_sdk.init(**{name: settings[name] for name in SDK_OPTIONS
                       if name in settings})
    for name in OWN_LOGGERS:
        _ignore_logger(name)
    for name in TRANSPORT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, TransportWarnings) for f in logger.filters):
            logger.addFilter(TransportWarnings())


class TransportWarnings(logging.Filter):
    """Keeps the connection pool's lines about the SDK's sending (a
    warning for every try of every envelope, when Sentry does not answer)
    out of the log: the first is told in one WARNING of this module, the
    others at DEBUG.  The pool's lines about other threads' requests
    pass."""

    warned = False

    def filter(self, record):
        if record.threadName != TRANSPORT_THREAD:
            return True
        if record.levelno >= logging.WARNING:
            level = logging.DEBUG if self.warned else logging.WARNING
            TransportWarnings.warned = True
            log.log(level, 'Sentry: cannot send (%s); the runner goes on'
                    ' without reporting what it cannot send',
                    record.getMessage())
        return False


def dotted_name(function):
    """The dotted name of a worker function."""
    return f'{function.__module__}.{function.__qualname__}'


def slug(name, monitors=None):
    """The Crons monitor slug of the worker or job of dotted name `name`:
    the one `monitors` (dotted name -> slug) gives, else `name` with '.'
    and ':' replaced by '-'."""
    if monitors and name in monitors:
        return monitors[name]
    return name.replace('.', '-').replace(':', '-')


def site_of(loop):
    """The site of `loop`, as a tag: its path of names ('/' for the root
    folder or the OFS application)."""
    site = loop._site
    physical = getattr(site, 'getPhysicalPath', None)  # Zope 4+
    if physical is not None:
        return '/'.join(physical()) or '/'
    names = []
    while site is not None and getattr(site, '__name__', None):
        names.append(site.__name__)
        site = getattr(site, '__parent__', None)
    return '/' + '/'.join(reversed(names))


class Reporter(Middleware):
    """The process's middleware that reports to Sentry (see the module);
    made with the settings of ``<sentry>``, it initialises the SDK."""

    def __init__(self, settings):
        self.monitors = settings.get('monitors', {})
        self._warned = False
        init(settings)
        # The check-in of each running `once` loop: id and start.
        self._check_ins = {}

    def tags(self, loop):
        return {
            'gocept.runner.worker': loop.name,
            'gocept.runner.tick': loop.tick_count,
            'gocept.runner.principal': loop.principal_id or '-',
            'gocept.runner.site': site_of(loop),
        }

    def before_loop(self, loop):
        if loop.once:
            self._check_ins[loop] = (self.check_in(
                dotted_name(loop.worker), 'in_progress'), time.monotonic())

    def after_tick(self, loop, tick):
        if tick.outcome == 'error':
            self.capture(tick.error, self.tags(loop))

    def after_loop(self, loop):
        check_in = self._check_ins.pop(loop, None)
        if check_in is None:
            return
        tick = loop.last_tick
        ok = tick is not None and tick.outcome in ('committed', 'doomed')
        check_in_id, started = check_in
        self.check_in(dotted_name(loop.worker), 'ok' if ok else 'error',
                      check_in_id, time.monotonic() - started)

    def after_process(self, process):
        try:
            sentry_sdk.flush()
        except Exception:
            self._warn('flushing')

    def job_started(self, loop, job):
        """The attempt of `job` begins; return what job_ended needs."""
        if job.schedule is None:
            return None
        return self.check_in(job.name, 'in_progress'), time.monotonic()

    def job_ended(self, loop, job, number, outcome, error, started):
        """The attempt `number` of `job` ended with `outcome` (and
        `error`); `started` is what job_started returned."""
        if outcome in JOB_EVENTS:
            tags = self.tags(loop)
            tags.update({
                'gocept.runner.job_name': job.name,
                'gocept.runner.job_id': job.id,
                'gocept.runner.attempt': number,
                'gocept.runner.principal': job.principal or '-',
            })
            self.capture(error, tags)
        if started is not None:
            check_in_id, began = started
            self.check_in(job.name, 'ok' if outcome == 'done' else 'error',
                          check_in_id, time.monotonic() - began)

    def capture(self, error, tags):
        try:
            sentry_sdk.capture_exception(error, tags=tags)
        except Exception:
            self._warn('sending an event')

    def check_in(self, name, status, check_in_id=None, duration=None):
        """Send a Crons check-in for the dotted name `name`; return its
        id."""
        try:
            return sentry_sdk.crons.capture_checkin(
                monitor_slug=slug(name, self.monitors),
                check_in_id=check_in_id, status=status, duration=duration)
        except Exception:
            self._warn('sending a check-in')

    def _warn(self, what):
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        log.log(level, 'Sentry: error %s; going on', what, exc_info=True)


def reporter_of(process):
    """The Reporter among the middleware of `process`, or None."""
    return next((middleware for middleware in process.middleware
                 if isinstance(middleware, Reporter)), None)
