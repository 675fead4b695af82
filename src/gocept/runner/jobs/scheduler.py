"""The scheduler: every job worker puts the jobs of the schedules that are
due, each occurrence once, however many workers run.

A schedule has one record in the database (a ScheduleRecord), which says
up to which occurrence it is dealt with.  The occurrence's job is put in
the transaction that moves the record on, so that of two processes that
try the same occurrence one commits and the other conflicts; the loser
looks again, finds the occurrence dealt with and puts nothing.  No leader
is elected: to keep such conflicts rare, the process that put the last
occurrence tries the next one at its time and the others HANDOVER seconds
later, when they find it done, unless that process is gone or busy.

What runs is what zope.conf's ``<schedules>`` names (see `configured`).
"""

import logging
import pkgutil
import threading
import time
import uuid

import transaction
from ZODB.POSException import ConflictError

from gocept.runner import retry
from gocept.runner.interfaces import ConfigurationError
from gocept.runner.jobs import record
from gocept.runner.jobs import store
from gocept.runner.jobs.registry import JobFunction
from gocept.runner.jobs.schedule import Schedule


log = logging.getLogger('gocept.runner.jobs')

#: Seconds after an occurrence's time at which the processes that did not
#: put the one before try it.
HANDOVER = 0.25
#: Seconds after its time when an occurrence whose job was not put is
#: missed (so is one that a later one follows before it was put).
LATE = 60
# Occurrences dealt with in one transaction, and missed ones logged one by
# one, at most.
LIMIT = 1000
LOGGED = 100

# One loop of a process puts at a time: the others would conflict with it.
_putting = threading.Lock()


class Entry:
    """A schedule as zope.conf has it: `function` (a JobFunction) runs on
    `schedule` (a Schedule), under its `name`."""

    def __init__(self, function, schedule):
        self.function = function
        self.schedule = schedule
        self.name = function.name
        self.catch_up = function.catch_up
        self.overlap = function.overlap
        self._next = (None, None)

    def next(self, last):
        """The first occurrence after `last`."""
        after, occurrence = self._next
        if after != last:
            occurrence = self.schedule.after(last)
            self._next = (last, occurrence)
        return occurrence

    def __repr__(self):
        return f'<Entry {self.name}: {self.schedule}>'


def configured(entries, where='<schedules> of zope.conf'):
    """The Entries of `entries` (dotted name -> schedule, '' for the
    function's own; see gocept.runner.config.schedules).  Raises
    ConfigurationError naming the first that cannot be imported, is no job
    function, or has no schedule or a bad one."""
    result = []
    for dotted, spec in entries.items():
        try:
            function = pkgutil.resolve_name(dotted)
        except Exception as e:
            raise ConfigurationError(
                f'Cannot import the scheduled job function {dotted} ({where}):'
                f' {type(e).__name__}: {e}') from None
        if not isinstance(function, JobFunction):
            raise ConfigurationError(
                f'{dotted} ({where}) is not a job function: decorate it with'
                ' gocept.runner.jobs.periodic')
        spec = spec.strip()
        if not spec:
            if function.schedule is None:
                raise ConfigurationError(
                    f'{dotted} ({where}) has no schedule: give one after its'
                    ' name, or decorate it with gocept.runner.jobs.periodic')
            schedule = function.schedule
        else:
            try:
                schedule = Schedule(_number(spec), getattr(
                    function.schedule, 'timezone', None))
            except ValueError as e:
                raise ConfigurationError(f'{dotted} ({where}): {e}') from None
        if any(entry.name == function.name for entry in result):
            raise ConfigurationError(
                f'{dotted} ({where}) is named twice')
        result.append(Entry(function, schedule))
    return result


def _number(spec):
    try:
        return float(spec)
    except ValueError:
        return spec


class Scheduler:
    """What a worker of the process `process_key` does for `entries` in
    the database of `connection`, in its ticks (see the module), at the
    times that `clock` gives (seconds since the epoch).

    `seen` holds, for the metrics, what the last look of a worker of this
    process found: each schedule's last success and next occurrence.
    """

    seen = {}

    def __init__(self, entries, connection, process_key, clock=time.time):
        self.entries = list(entries)
        self.connection = connection
        self.process_key = process_key
        self.clock = clock

    def tick(self):
        """Put the jobs of the due occurrences (in the current transaction,
        which is committed then); return the seconds until this worker is
        to look again, or None when it may wait until its poll."""
        now = self.clock()
        jobs = store.jobs_of(self.connection)
        if jobs is None:
            return None
        wait = None
        due = False
        for entry in self.entries:
            at = self._turn(jobs, entry)
            if at is None:
                continue
            if at <= now:
                due = True
            elif wait is None or at - now < wait:
                wait = at - now
        if not due or not _putting.acquire(blocking=False):
            return wait
        try:
            lines, _ = retry.run(self._put, failed=_conflicted)
        except ConflictError:
            log.debug('Schedules: conflicts putting due jobs; looking again')
            return 0
        finally:
            _putting.release()
        for level, line, args in lines:
            log.log(level, line, *args)
        return 0

    def _turn(self, jobs, entry):
        """When this process is to put the next occurrence of `entry`; None
        while a job of it runs and it may not overlap."""
        schedule = jobs.schedules().get(entry.name)
        if schedule is None:
            return 0  # its record is to be made
        occurrence = entry.next(schedule.last)
        self.seen[entry.name] = (schedule.outcome.last_success, occurrence)
        if not entry.overlap and _running(jobs, schedule):
            return None
        if schedule.put_by != self.process_key:
            occurrence += HANDOVER
        return occurrence

    def _put(self):
        """Put the jobs of the due occurrences; return the log lines."""
        now = self.clock()
        jobs = store.jobs_of(self.connection)
        lines = []
        for entry in self.entries:
            schedule = jobs.schedules().get(entry.name)
            if schedule is None:
                # Its first occurrence is the first after now.
                jobs.schedule_record(entry.name, now).put_by = (
                    self.process_key)
                lines.append((logging.DEBUG, 'Schedule %s: kept from now on',
                              (entry.name,)))
                continue
            at = self._turn(jobs, entry)
            if at is not None and at <= now:
                lines.extend(self._occur(jobs, entry, schedule, now))
        transaction.get().note('gocept.runner.jobs: schedules')
        return lines

    def _occur(self, jobs, entry, schedule, now):
        """Put the job(s) of the due occurrences of `entry` or skip them, as
        its catch_up says; return the log lines."""
        found, more = entry.schedule.between(schedule.last, now, LIMIT)
        latest = previous = found[-1]
        if more:
            # Only the latest (and the one before it) of those not found.
            tail, _ = entry.schedule.between(
                max(latest, now - (latest - found[0])), now, LIMIT)
            latest = tail[-1] if tail else latest
            previous = tail[-2] if len(tail) > 1 else previous
        on_time = now - latest <= LATE
        if entry.catch_up == 'all':
            put = found if entry.overlap else found[:1]
            skipped = []
            schedule.last = put[-1]
        else:
            put = [latest] if on_time or entry.catch_up == 'latest' else []
            skipped = [occurrence for occurrence in found
                       if occurrence != latest]
            if not put:
                skipped.append(latest)
            schedule.last = latest
        why = self._why(schedule)
        lines = []
        for occurrence in skipped[:LOGGED]:
            lines.append((
                logging.WARNING, 'Schedule %s missed its occurrence at %s'
                ' (%s); skipped', (entry.name, local_time(occurrence),
                                   why(occurrence))))
        if len(skipped) > LOGGED or more and entry.catch_up != 'all':
            until = previous if more and put else skipped[-1]
            lines.append((
                logging.WARNING, 'Schedule %s missed more occurrences, up to'
                ' %s; skipped', (entry.name, local_time(until))))
        for occurrence in put:
            job_id = self._job(jobs, entry, schedule, occurrence)
            if occurrence != latest or not on_time:
                lines.append((
                    logging.WARNING, 'Schedule %s missed its occurrence at'
                    ' %s (%s); job %s runs it late',
                    (entry.name, local_time(occurrence), why(occurrence),
                     job_id)))
            else:
                lines.append((logging.DEBUG, 'Schedule %s: job %s put for'
                              ' its occurrence at %s',
                              (entry.name, job_id, local_time(occurrence))))
        schedule.put_by = self.process_key
        return lines

    def _why(self, schedule):
        """A function giving why an occurrence was missed."""
        previous, ended = schedule.occurrence, schedule.outcome.at

        def why(occurrence):
            if previous is not None and ended is not None and (
                    previous < occurrence <= ended):
                return f'the job of {local_time(previous)} still ran'
            return 'no worker put it in time'
        return why

    def _job(self, jobs, entry, schedule, occurrence):
        """Put the job of `entry` for `occurrence`; return its id."""
        function = entry.function
        job = record.Job(uuid.uuid4().hex, function.name,
                         retries=function.retries,
                         time_limit=function.time_limit,
                         retry_pause=function.retry_pause, eta=occurrence)
        job.schedule, job.occurrence = entry.name, occurrence
        jobs.put(job)
        schedule.job_id, schedule.occurrence = job.id, occurrence
        return job.id


def _conflicted(error):
    if isinstance(error, ConflictError):
        log.debug('Schedules: a conflict putting due jobs (another worker'
                  ' put them, mostly); looking again')


def _running(jobs, schedule):
    """Whether the job of the schedule's last occurrence is pending or
    running."""
    if schedule.job_id is None:
        return False
    job = jobs.get(schedule.job_id)
    return job is not None and job.state in (record.PENDING, record.RUNNING)


def local_time(seconds):
    """`seconds` since the epoch in the machine's time zone, with its
    offset (as gocept-jobs prints times)."""
    return time.strftime('%Y-%m-%d %H:%M:%S%z', time.localtime(seconds))
