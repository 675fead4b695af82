"""Job functions: the decorator `job` and the registry of what may run.

A worker calls only functions decorated with `job` (as Celery runs only
registered tasks).  A job record names its function as ``module:qualname``;
the registry maps that name to the function once the module has been
imported (by the application, or by the worker, see `import_modules`).
Nothing that a record names is ever imported or called on its behalf.
"""

import datetime
import functools
import importlib
import math
import numbers
import time
import uuid

import zope.security.management

from gocept.runner import environment
from gocept.runner import tracing
from gocept.runner.interfaces import ConfigurationError
from gocept.runner.jobs import lookup
from gocept.runner.jobs.attempts import RETRY_PAUSE
from gocept.runner.jobs.record import Job
from gocept.runner.jobs.schedule import Schedule
from gocept.runner.jobs.store import jobs_of


RETRIES = 3
#: What a schedule does with occurrences that no worker put in time.
CATCH_UP = ('latest', 'all', 'none')

# The job functions: name -> JobFunction.
_registry = {}


def lookup_function(name):
    """The JobFunction registered as `name`, or None."""
    return _registry.get(name)


def names():
    """The names of the job functions registered."""
    return list(_registry)


def job(function=None, *, retries=RETRIES, time_limit=None,
        retry_pause=RETRY_PAUSE):
    """Decorate a module's function as a job function: ``@job`` or
    ``@job(retries=3, time_limit=None)``.

    It keeps working when called, and gains ``delay`` and ``apply_async``,
    which put a job into the database of the current site.  A job that
    raises is run again up to `retries` times, after a pause from
    `retry_pause` seconds on that grows with each retry (see
    gocept.runner.jobs.attempts); one that runs longer than `time_limit`
    seconds is interrupted.  The function must be found by its module and
    qualified name.
    """
    options = _check_options(retries, time_limit, retry_pause)
    if function is None:
        return lambda function: JobFunction(function, **options)
    return JobFunction(function, **options)


def periodic(schedule, *, catch_up='latest', timezone=None, overlap=False,
             **job_options):
    """Decorate a module's function as a job function (see `job`, which
    takes `job_options`) that runs on `schedule`: a cron expression (five
    fields, or six with the seconds last) in `timezone` (default: the
    machine's), or a number of seconds.

    It runs where zope.conf's ``<schedules>`` names it, without arguments,
    once per occurrence however many workers run.  Occurrences missed (no
    worker ran, or the job of an earlier one still ran) are `catch_up`:
    'latest' puts one job for them, 'all' one per occurrence, 'none' skips
    them.  While a job of the schedule is pending or running, no other is
    put, unless `overlap`.
    """
    when = Schedule(schedule, timezone)
    if catch_up not in CATCH_UP:
        raise ValueError(
            f'catch_up must be one of {", ".join(map(repr, CATCH_UP))}, not'
            f' {catch_up!r}')
    decorate_job = job(**job_options)

    def decorate(function):
        decorated = decorate_job(function)
        decorated.schedule = when
        decorated.catch_up = catch_up
        decorated.overlap = bool(overlap)
        return decorated
    return decorate


class JobFunction:
    """A function decorated with `job`, registered under its `name`;
    `schedule` (a Schedule), `catch_up` and `overlap` are those of
    `periodic`."""

    schedule = None
    catch_up = 'latest'
    overlap = False

    def __init__(self, function, retries, time_limit, retry_pause):
        if not callable(function) or isinstance(function, JobFunction):
            raise TypeError(f'job decorates a function, not {function!r}')
        qualname = getattr(function, '__qualname__', '')
        if '<' in qualname or not getattr(function, '__module__', None):
            raise ValueError(
                f'job decorates functions that workers find by name: not'
                f' {qualname or function!r} (define it at the top level of'
                ' a module)')
        functools.update_wrapper(self, function)
        self.function = function
        self.name = f'{function.__module__}:{qualname}'
        self.retries = retries
        self.time_limit = time_limit
        self.retry_pause = retry_pause
        # A module imported again replaces its functions.
        _registry[self.name] = self

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)

    def delay(self, *args, **kwargs):
        """Put a job that calls the function with these arguments; return
        its id."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args=(), kwargs=None, countdown=None, eta=None):
        """Put a job that calls the function with `args` and `kwargs`, due
        in `countdown` seconds or at `eta` (a datetime, or seconds since
        the epoch), else now; return its id.

        The job is put into the database the current site is stored in
        (see gocept.runner.jobs.lookup.context), within the current
        transaction: if that aborts, there is no job.  It keeps the
        current trace context, if there is one (see gocept.runner.tracing).
        """
        if kwargs is None:
            kwargs = {}
        if not isinstance(args, (tuple, list)):
            raise TypeError(f'args must be a tuple or a list, not {args!r}')
        if not isinstance(kwargs, dict):
            raise TypeError(f'kwargs must be a dict, not {kwargs!r}')
        due = _due(countdown, eta)
        context = lookup.context()
        jobs = jobs_of(context._p_jar, create=True)
        record = Job(uuid.uuid4().hex, self.name, args, kwargs,
                     retries=self.retries, time_limit=self.time_limit,
                     retry_pause=self.retry_pause,
                     principal=current_principal(context), eta=due)
        carrier = tracing.inject()
        if carrier is not None:
            record.trace_context = carrier
        jobs.put(record)
        return record.id

    def __repr__(self):
        return f'<job {self.name}>'


def _check_options(retries, time_limit, retry_pause):
    if (isinstance(retries, bool) or not isinstance(retries, int) or
            retries < 0):
        raise ValueError(
            f'retries must be a whole number from 0 up, not {retries!r}')
    if time_limit is not None and not _seconds(time_limit, above=0):
        raise ValueError(
            f'time_limit must be a number of seconds above 0, not'
            f' {time_limit!r}')
    if not _seconds(retry_pause):
        raise ValueError(
            f'retry_pause must be a number of seconds, not {retry_pause!r}')
    return dict(retries=retries, time_limit=time_limit,
                retry_pause=retry_pause)


def _seconds(value, above=None):
    """Whether `value` is a finite number of seconds from 0 (or above
    `above`) up."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    value = float(value)
    return math.isfinite(value) and (
        value >= 0 if above is None else value > above)


def _due(countdown, eta):
    """When a job is due, in seconds since the epoch (None: now)."""
    if countdown is not None and eta is not None:
        raise ValueError('Give countdown or eta, not both')
    if countdown is not None:
        if not _seconds(countdown):
            raise ValueError(
                f'countdown must be a number of seconds from 0 up, not'
                f' {countdown!r}')
        return time.time() + float(countdown)
    if eta is None:
        return None
    if isinstance(eta, datetime.datetime):
        # A naive datetime is local time, as datetime.timestamp() has it.
        return eta.timestamp()
    if not _seconds(eta):
        raise ValueError(
            f'eta must be a datetime or seconds since the epoch, not'
            f' {eta!r}')
    return float(eta)


def current_principal(context=None):
    """The id of the principal of the current interaction, or None; for
    `context`, an object of a Zope 4+ instance: the id of the user of
    Zope's security manager, or None."""
    zopeapp = environment.zope_stack(context)
    if zopeapp is not None:
        return zopeapp.current_user_id()
    interaction = zope.security.management.queryInteraction()
    for participation in getattr(interaction, 'participations', ()):
        principal = getattr(participation, 'principal', None)
        if principal is not None:
            return principal.id
    return None


def import_modules(names, where):
    """Import the modules `names`, so that their job functions are
    registered; raise ConfigurationError naming `where` they are
    configured if one cannot be imported."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:
            raise ConfigurationError(
                f'Cannot import the job module {name} ({where}):'
                f' {type(e).__name__}: {e}') from e
