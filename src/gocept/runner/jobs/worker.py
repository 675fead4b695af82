"""The worker: a main loop that takes a due job per tick and runs it.

A job runs in three transactions of its own, all annotated with its name
and id (and with its principal as the user):

1. The take: the job leaves its shard, is marked running and gains an
   attempt, which is committed before the job runs, so that a job that
   kills its process has its attempt counted.  A conflict is tried again
   at once and is no attempt.
2. The run: the job's function is called (in an interaction of the
   principal who put it, within its time limit), and its changes commit
   together with its 'done' mark and its result: its effects on the
   database happen once or not at all.  A conflict is tried again at once
   (gocept.runner.retry.run); when it goes on, the attempt ends as a
   'conflict', which does not count against the job's retries.

   The run's transaction is also the take of the next jobs (the first
   try of it: a retry after a conflict takes none), but only from the
   worker's own shards that may have a due job: the database's workers
   share the shards out among themselves by their keys, so that two runs
   never take the same job, and a take that lost a race cannot cost a run
   its commit.  It takes as many as fit in BATCH_SECONDS by the time the
   worker's jobs took so far, BATCH at most, all of one principal.  When
   its own shards have none due, the next tick looks where a job may be
   (see JobWorker._plan), in a transaction of its own.  Jobs taken
   together run in one transaction,
   so that a job costs a part of a commit; after them, a transaction of
   its own takes the next (a take that conflicts there costs no job's
   run).  When one of them raises, that transaction is aborted and each
   runs again on its own, in the attempt it has.  A job whose last
   attempt ended as its process died runs alone.  Jobs taken so but not
   begun when the loop ends are given back as they were, without the
   attempts.
3. Only when the run failed: the attempt's error and traceback are
   recorded, and the job is queued again or failed (see
   gocept.runner.jobs.attempts).

Every log line about a job names it by name and id.
"""

import logging
import random
import sys
import threading
import time
import traceback

import transaction
import zope.app.appsetup.product
from ZODB.POSException import ConflictError
from ZODB.utils import tid_repr

from gocept.runner import assembly
from gocept.runner import config
from gocept.runner import outage
from gocept.runner import retry
from gocept.runner import signals
from gocept.runner import tracing
from gocept.runner.decorators import appmain
from gocept.runner.jobs import attempts
from gocept.runner.jobs import liveness
from gocept.runner.jobs import lookup
from gocept.runner.jobs import registry
from gocept.runner.jobs import scheduler
from gocept.runner.jobs import store
from gocept.runner.jobs import wakeup
from gocept.runner.jobs.counts import Counts
from gocept.runner.jobs.timelimit import TimeLimitExceeded
from gocept.runner.jobs.timelimit import time_limit
from gocept.runner.logging import job_context
from gocept.runner.middleware import Middleware
from gocept.runner.tick import Exit


log = logging.getLogger('gocept.runner.jobs')

#: Jobs that one transaction runs together, at most (see JobWorker.run).
BATCH = 10
#: Seconds of jobs a batch is sized for, by the time the worker's jobs
#: took so far.
BATCH_SECONDS = 0.1

#: Seconds for which a worker takes the workers of its database as it
#: last read them.
WORKERS_SECONDS = 1
#: Seconds between the turns of idle workers woken by one job queued (see
#: gocept.runner.jobs.wakeup), at least (more when takes and jobs take
#: longer; see JobWorker._spacing).
TURN = 0.01
#: The longest an idle worker waits for its turn.
MAX_TURN = 0.5

#: Seconds an idle worker waits before it looks for due jobs again (less,
#: when one is due earlier), unless a job queued wakes it first (see
#: gocept.runner.jobs.wakeup).
POLL = 1
# The product-config section and its key that name the modules of job
# functions for a worker to import.
PRODUCT_CONFIG = 'gocept.runner.jobs'

# The JobWorker of the loop that runs in this thread.
_current = threading.local()


class NotOurs(Exception):
    """The job was taken from this worker (its process was held dead)."""


class JobWorker:
    """What one main loop does with jobs: its worker record, the job it
    runs (see the module)."""

    def __init__(self, loop, connection, liveness, burst=False, entries=(),
                 watcher=None):
        self.loop = loop
        self.connection = connection
        self.liveness = liveness
        self.burst = burst
        # What puts the jobs of the schedules (see
        # gocept.runner.jobs.scheduler), if zope.conf has any.
        self.scheduler = None if not entries else scheduler.Scheduler(
            entries, connection, liveness.key)
        # The wakeup.Watcher that wakes the loop when a job is queued.
        self.watcher = watcher
        self.key = f'{liveness.key}/{threading.get_native_id()}'
        # The WorkerRecord of the last take.
        self.record = None
        # The job and function that the last run took (see _take_next),
        # once its transaction committed; the tries of the current run.
        self._next = None
        self._tries = 0
        # What it did with jobs (see gocept.runner.jobs.metrics).
        self.counts = Counts()
        # What reports its jobs' failures (see gocept.runner.sentry).
        self.reporter = None
        # The seconds a job's call took, on a moving average (None before
        # the first): how many jobs a batch takes.
        self._call_seconds = None
        # The keys of the database's workers, sorted, and when they were
        # read.
        self._workers = ((), None)
        # When (by time.monotonic()) it looks at every shard next, and when
        # its last look began.
        self._poll_at = 0.0
        self._looked = 0.0
        # By time.monotonic(), at or before the start of the transaction
        # that runs now (what it reads holds as of then): set before each
        # end of a transaction of this worker's thread (see Since).
        self.since = 0.0
        self._since = None
        # The seconds from the start of a look to the commit of its take,
        # on a moving average.
        self._take_seconds = TURN
        # The indexes of the shards whose take was merged with another
        # commit (see _took).
        self._merged = set()

    def tick(self):
        """Take a due job and run it; return the seconds to wait before
        the next tick."""
        self.loop.in_worker = False
        if self._since is None:
            # In the thread of the loop: its transaction manager.
            self._since = Since(self)
            transaction.manager.registerSynch(self._since)
        wait = None
        if self.scheduler is not None and not self.burst:
            wait = self._schedule()
        if self._merged:
            self._ring_again()
        chained = self._chained()
        if chained is not None:
            # Taken by the last run's commit; run in the tick's transaction.
            self._run(chained)
            return 0
        pause, shards = self._plan()
        if pause:
            return pause if wait is None else min(pause, wait)
        try:
            taken, _ = retry.run(lambda: self._take(shards),
                                 begin=self._begin_look)
        except ConflictError:
            log.debug('Worker %s: conflicts taking a job; looking again',
                      self.key)
            return 0
        for ending in self._endings:
            ending.log()
            self.counts.ended(ending)
        what, value = taken
        if what == 'taken':
            self._take_seconds += (
                time.monotonic() - self._looked - self._take_seconds) / 8
        if shards is None:
            # The next look at every shard, unless one is due earlier.
            self._poll_at = self._looked + POLL
        if what == 'idle':
            self._poll_at = min(self._poll_at, self._looked + value)
            if shards is not None:
                # Shards of others' shares may have a job still: the wait
                # for its turn at them, or for its next look at every
                # shard.
                value = self._plan()[0]
            return value if wait is None else max(0, min(value, wait))
        if what == 'exit':
            return Exit
        if what == 'taken':
            if self._merged:
                self._ring_again()
            self._run([value])
        return 0

    def _schedule(self):
        """Put the jobs of the due occurrences of the schedules, in the
        tick's transaction (committed if it puts one); return the seconds
        until they are to be looked at again, or None."""
        try:
            return self.scheduler.tick()
        except Exception as error:
            if outage.unavailable(error):
                raise  # the loop waits for the storage
            # Jobs go on being taken whatever befalls the schedules.
            log.error('Worker %s: the schedules failed; taking jobs all the'
                      ' same', self.key, exc_info=True)
            transaction.abort()
            return None

    def _jobs(self):
        return store.jobs_of(self.connection)

    def _chained(self):
        """The jobs, each with its function, that the last run took (see
        _take_next) and are still this worker's to run, or None."""
        chained, self._next = self._next, None
        if not chained:
            return None
        ours = self.record.runs()
        chained = [(job, function) for job, function in chained
                   if any(job is own for own in ours)]
        return chained or None

    def _record(self, jobs):
        """This worker's record, made if need be; None while its process
        is not registered."""
        process = jobs.processes().get(self.liveness.key)
        if process is None:
            return None
        worker = process.workers.get(self.key)
        if worker is None:
            worker = process.workers[self.key] = store.WorkerRecord(self.key)
        return worker

    def _begin_look(self):
        # What the look finds holds as of its transaction's start.
        self._looked = self.since = time.monotonic()
        transaction.begin()

    def _plan(self):
        """When and where this worker looks for due jobs next: the seconds
        to wait first, and the indexes of the shards to look at (None:
        all).

        It looks at every shard when it has not for POLL seconds (or when
        a job it saw is due), else only at those that may have a due job
        (wakeup.Watcher.candidates): at once if its share of the shards
        has one, else in turns with the database's other workers that have
        none, `_spacing` seconds apart from when the earliest was queued,
        in an order that the transaction which rang last chooses.  By its
        turn the job is likely taken, and on a ZEO server the worker knows
        it."""
        now = time.monotonic()
        watcher = self.watcher
        jobs = self._jobs()
        if watcher is None or jobs is None:
            return 0, None
        # Its doorbells, which wake this worker while it waits.
        watcher.attend(jobs)
        if self.burst or now >= self._poll_at:
            return 0, None
        candidates = watcher.candidates(jobs.shards)
        if not candidates:
            return self._poll_at - now, ()
        keys = self._worker_keys(jobs)
        if self.key not in keys:
            return 0, None
        count, place = len(keys), keys.index(self.key)
        mine = [index for index in candidates if index % count == place]
        if mine:
            return 0, _from_random(mine)
        # The places of the workers whose share has a candidate look first.
        first = {index % count for index in candidates}
        rung = watcher.rung
        start = 0 if rung is None or rung.tid is None else int.from_bytes(
            rung.tid, 'big')
        turn = 1 + [other for other in (
            (start + step) % count for step in range(count))
            if other not in first].index(place)
        wait = min(turn * self._spacing(), MAX_TURN) - (
            now - min(candidates.values()))
        if wait > 0:
            return min(wait, self._poll_at - now), ()
        return 0, _from_random(list(candidates))

    def _spacing(self):
        """The seconds between two turns: TURN at least, and time for a
        worker to take a job after the one it runs, by how long this
        worker's takes and jobs take."""
        return max(TURN, 2 * self._take_seconds + (self._call_seconds or 0))

    def _take(self, shards=None):
        """Transaction 1: take a due job (see the module) from the shards
        of the indexes `shards` (None: any)."""
        self._endings = []
        now = time.time()
        jobs = self._jobs()
        worker = None if jobs is None else self._record(jobs)
        if worker is None:
            return 'idle', POLL
        if worker.batch:
            # Left running when the storage went away in its run.
            for job in worker.runs():
                self._endings.append(attempts.end(
                    jobs, job, 'interrupted', now,
                    'its worker lost the storage while it ran'))
            worker.batch = ()
        if shards is None:
            # Its own shards first: where no run of another worker takes.
            own = self._own_shards(jobs)
            shards = [*own, *_others(own, jobs)]
        job, next_due = jobs.take(now, shards=shards)
        if self.watcher is not None:
            # Those before the job's had none due.
            self.watcher.clear(
                shards if job is None else shards[:shards.index(job.shard)],
                self.since)
        if job is None and self.burst and not jobs and not any(
                jobs.running()):
            return 'exit', None
        if job is None:
            pause = POLL if next_due is None else next_due - now
            return 'idle', max(0, min(POLL, pause))
        annotate(self.loop, job, 'take')
        self._took(jobs, [job], now)
        function = registry.lookup_function(job.name)
        if function is None:
            self._endings.append(attempts.refuse(jobs, job, self.key, now))
            return 'refused', job
        job.begin_attempt(self.key, now)
        worker.batch = ((job, len(job.attempts)),)
        self.record = worker
        return 'taken', (job, function)

    def _run(self, batch):
        """Run the jobs of `batch` ((job, function) pairs): several
        together in one transaction; when one of them fails, none of them
        has, and each runs again on its own, in the attempt it has."""
        if len(batch) > 1 and self._run_together(batch):
            return
        for number, (job, function) in enumerate(batch, 1):
            with job_context(job):
                # Only the last takes the next jobs.
                self._run_one(job, function, chain=number == len(batch))

    def _run_together(self, batch):
        """Transaction 2 of several jobs; return whether it committed."""
        runs = [Running(job, function) for job, function in batch]
        reporter = self.reporter
        self._tries = 0
        try:
            retry.run(lambda: self._call_together(runs),
                      begin=lambda: self._begin_together(runs))
        except Exception as error:
            if outage.unavailable(error):
                raise  # the loop waits for the storage; see _take
            for run in runs:
                if run.span is not None:
                    run.span.end('alone', 0, None, error)
            log.debug('Worker %s: a batch of %s jobs failed (%s); running'
                      ' each alone', self.key, len(runs),
                      describe(error, runs[0].job)[1])
            return False
        except BaseException as error:
            # Interrupted: each attempt ends so.
            for run in runs:
                if run.span is not None:
                    run.span.end('interrupted', 0, None, error)
                self._failed(run.job, run.number, error, run.taken_in, 0)
            raise
        for run in runs:
            tid = tid_repr(run.job._p_serial)
            self.counts.done(run.job.name, run.seconds)
            with job_context(run.job):
                log.debug('Job %s done in %.3f seconds (with %s others)',
                          run.job.describe(), run.seconds, len(runs) - 1)
            if reporter is not None:
                reporter.job_ended(self.loop, run.job, run.number, 'done',
                                   None, run.reported)
            if run.span is not None:
                run.span.end('done', self._tries - 1, tid)
        for ending in self._endings:
            ending.log()
            self.counts.ended(ending)
        self._next = self._take_after()
        for ending in self._endings:
            ending.log()
            self.counts.ended(ending)
        return True

    def _begin_together(self, runs):
        self._tries += 1
        for run in runs:
            if not run.job.runs_in(self.key, run.number):
                raise NotOurs(run.job.id)
            annotate(self.loop, run.job, 'run')

    def _call_together(self, runs):
        jobs = self._jobs()
        for run in runs:
            job = run.job
            with job_context(job):
                if not run.begun:  # the first try of the batch
                    run.begun = True
                    log.debug('Job %s: attempt %s started by worker %s'
                              ' with %s others', job.describe(), run.number,
                              self.key, len(runs) - 1)
                    if self.reporter is not None:
                        run.reported = self.reporter.job_started(
                            self.loop, job)
                    run.span = tracing.job(job, run.number)
                elif run.span is not None:
                    run.span.enter()
                started = time.monotonic()
                try:
                    result = self._call_function(job, run.function)
                finally:
                    if run.span is not None:
                        run.span.leave()
                    self._restore_interaction()
            run.seconds = time.monotonic() - started
            self._timed(run.seconds)
            now = time.time()
            job.result = result
            job.end_attempt('done', now, transaction=run.taken_in)
            jobs.done(job, now)
        self.record.batch = ()
        self._endings = []

    def _take_after(self):
        """After a batch: take the next jobs in a transaction of their own
        (a take that conflicts costs no job's call); return them, or None.
        """
        if not self.loop.running:
            return None

        def take():
            self._endings = []
            jobs = self._jobs()
            taken = self._take_next(jobs, time.time(), self._where(jobs))
            if taken:
                # Noted by the take; named as the jobs' transaction, too.
                annotate(self.loop, taken[0][0])
            return taken
        try:
            taken, _ = retry.run(take, begin=transaction.begin)
        except ConflictError:
            return None
        return taken

    def _timed(self, seconds):
        """A job's call took `seconds`: into the moving average."""
        if self._call_seconds is None:
            self._call_seconds = seconds
        else:
            self._call_seconds += (seconds - self._call_seconds) / 8

    def _batch_size(self):
        """How many jobs the next take takes: as many as fit in
        BATCH_SECONDS by the time jobs took so far, BATCH at most."""
        if self._call_seconds is None:
            return 1
        if self._call_seconds <= 0:
            return BATCH
        return max(1, min(BATCH, int(BATCH_SECONDS / self._call_seconds)))

    def _run_one(self, job, function, chain=True):
        """Transactions 2 and 3: run `job` alone; record how it went.
        With `chain`, its transaction takes the next jobs."""
        number = len(job.attempts)
        # The job was last written by the take.
        taken_in = tid_repr(job._p_serial)
        log.debug('Job %s: attempt %s started by worker %s', job.describe(),
                  number, self.key)
        reporter = self.reporter
        reported = (None if reporter is None
                    else reporter.job_started(self.loop, job))
        span = tracing.job(job, number)
        # The errors of the run's transactions, for its span.
        errors = []
        outcome, retried, tid, failure = 'done', 0, None, None
        started = time.monotonic()
        self._tries = 0
        try:
            taken, retried = retry.run(
                lambda: self._call(job, function, taken_in, chain),
                begin=lambda: self._begin_run(job, number),
                failed=None if span is None else errors.append)
        except NotOurs as error:
            outcome, failure = 'interrupted', error
            log.warning('Job %s was taken from worker %s, whose process was'
                        ' held dead; it goes on elsewhere', job.describe(),
                        self.key)
        except BaseException as error:
            outcome, failure = describe(error, job)[0], error
            if outage.unavailable(error):
                outcome = 'interrupted'
                raise  # the loop waits for the storage; see _take
            self._failed(job, number, error, taken_in,
                         time.monotonic() - started)
            if reporter is not None:
                reporter.job_ended(self.loop, job, number, outcome, error,
                                   reported)
            if isinstance(error, KeyboardInterrupt):
                raise
        else:
            seconds = time.monotonic() - started
            tid = tid_repr(job._p_serial)
            self.counts.done(job.name, seconds)
            log.debug('Job %s done in %.3f seconds', job.describe(), seconds)
            if reporter is not None:
                reporter.job_ended(self.loop, job, number, 'done', None,
                                   reported)
            self._next = taken
            for ending in self._endings:
                ending.log()
                self.counts.ended(ending)
        finally:
            self._restore_interaction()
            if span is not None:
                if failure is not None:
                    retried = len(errors) - 1
                span.end(outcome, retried, tid, failure)

    def _begin_run(self, job, number):
        # No transaction.begin(): the commit of the take, or the abort
        # before a retry, brought the connection up to date (a begin would
        # ask the storage again).
        self._tries += 1
        if not job.runs_in(self.key, number):
            raise NotOurs(job.id)
        annotate(self.loop, job, 'run')

    def _call_function(self, job, function):
        """Call the job's function as its principal, within its time
        limit; return its result."""
        if job.principal is not None:
            self.loop.act_as(job.principal)
        try:
            signals.worker_begins(self.loop)
            with time_limit(job.time_limit):
                return function.function(*job.args, **job.kwargs)
        finally:
            self.loop.in_worker = False

    def _call(self, job, function, taken_in, chain=True):
        started = time.monotonic()
        result = self._call_function(job, function)
        self._timed(time.monotonic() - started)
        now = time.time()
        job.result = result
        job.end_attempt('done', now, transaction=taken_in)
        jobs = self._jobs()
        jobs.done(job, now)
        self.record.ended(job)
        self._endings = []
        if chain and self._tries == 1 and self.loop.running:
            return self._take_next(jobs, now, self._where(jobs))
        return None

    def _worker_keys(self, jobs):
        """The keys of the database's workers, sorted (read again when
        what it read is WORKERS_SECONDS old)."""
        keys, read = self._workers
        if read is None or time.monotonic() - read > WORKERS_SECONDS:
            keys = tuple(sorted(jobs.worker_keys()))
            # As old as the transaction's start (a run's may be old).
            self._workers = (keys, self.since)
        return keys

    def _share(self, jobs):
        """The indexes of this worker's share of the pending shards (by
        its place among the database's workers): a range, maybe empty."""
        keys = self._worker_keys(jobs)
        if self.key not in keys:
            return range(0)
        return range(keys.index(self.key), jobs.shards, len(keys))

    def _own_shards(self, jobs):
        """This worker's share of the pending shards, from a random one
        on."""
        return _from_random(self._share(jobs))

    def _where(self, jobs):
        """The indexes of the shards that a run takes the next jobs from:
        those of its share that may have a due job (see _plan).  Others'
        shards it looks at in its turn."""
        mine = self._own_shards(jobs)
        if self.watcher is None:
            return mine
        candidates = self.watcher.candidates(jobs.shards)
        return [index for index in mine if index in candidates]

    def _took(self, jobs, took, now, looked=()):
        """The transaction takes the jobs `took`, having looked at the
        shards of the indexes `looked`, too.  It rings the doorbells of the
        shards the jobs came from that still have a due job: the workers
        that did not look, knowing the shards changed, look now.  After its
        commit, the shards found without a due job are noted so.

        A put into a shard commits beside a take from it (see
        gocept.runner.shards): when the take's commit was merged with one that
        came between its start and its commit, the worker rings the
        shard's doorbell again, if it has a due job, in a transaction of
        its own right after (see `_ring_again`)."""
        taken_from = {job.shard for job in took}
        for index in taken_from:
            if jobs.due_in(index, now):
                wakeup.ring(jobs, index)
        looked = taken_from.union(looked)
        if looked:
            transaction.get().addAfterCommitHook(
                self._after_take, (jobs, taken_from, looked, now, self.since))

    def _after_take(self, committed, jobs, taken_from, looked, now, since):
        if not committed:
            return
        # A shard whose state this connection no longer holds was changed
        # by another commit, merged with the take's (a put, maybe).
        self._merged.update(
            index for index in taken_from if not jobs.is_current(index))
        if self.watcher is not None:
            self.watcher.clear([
                index for index in looked
                if jobs.is_current(index) and not jobs.due_in(index, now)],
                since)

    def _ring_again(self):
        """Ring the doorbells of the shards whose take was merged with
        another commit (see `_took`) and that have a due job."""
        merged, self._merged = self._merged, set()

        def ring():
            jobs = self._jobs()
            now = time.time()
            for index in merged:
                if jobs.due_in(index, now):
                    wakeup.ring(jobs, index)
        try:
            retry.run(ring, begin=transaction.begin)
        except ConflictError:
            # The doorbells resolve their conflicts: not for long.
            self._merged.update(merged)

    def _take_next(self, jobs, now, shards=None):
        """Take the next due jobs (see the module), from `shards` (their
        indexes; None: any): as many as `_batch_size` says, all of one
        principal, and a job whose last attempt died alone; return them,
        each with its function, or None."""
        wanted = self._batch_size()
        taken = []
        took = []
        while len(taken) < wanted:
            first = taken[0][0] if taken else None
            job, _ = jobs.take(now, None if first is None else (
                lambda job: job.principal == first.principal and
                not died(job)), shards)
            if job is None:
                break
            took.append(job)
            transaction.get().note(
                f'gocept.runner.jobs: take job {job.describe()}')
            function = registry.lookup_function(job.name)
            if function is None:
                self._endings.append(
                    attempts.refuse(jobs, job, self.key, now))
                continue
            alone = died(job)
            job.begin_attempt(self.key, now)
            taken.append((job, function))
            if alone:
                break
        self._took(jobs, took, now, shards or ())
        if not taken:
            return None
        self.record.batch = tuple((job, len(job.attempts))
                                  for job, _ in taken)
        return taken

    def _restore_interaction(self):
        # The rest of the tick runs as the loop's principal again.
        self.loop.act_as(None)

    def _failed(self, job, number, error, taken_in, seconds):
        """Transaction 3: record the failed attempt of `job`, which ran
        `seconds`."""
        outcome, line = describe(error, job)
        text = job_traceback(error)
        endings = []

        def record():
            endings.clear()
            if not job.runs_in(self.key, number):
                return
            annotate(self.loop, job, 'record the attempt of')
            endings.append(attempts.end(
                self._jobs(), job, outcome, time.time(), line, text,
                taken_in))
            self.record.ended(job)
        retry.run(record, begin=transaction.begin)
        for ending in endings:
            ending.log()
            self.counts.ended(ending, seconds)

    def unregister(self):
        """Give back a job taken but not begun; remove the worker's record,
        unless it has a job left (when the storage went away, say: then its
        process's end leaves it)."""
        chained, self._next = self._next, None

        def unregister():
            jobs = self._jobs()
            if jobs is None:
                return
            process = jobs.processes().get(self.liveness.key)
            worker = None if process is None else process.workers.get(
                self.key)
            if worker is None:
                return
            ours = worker.runs()
            for job, _ in chained or ():
                if any(job is own for own in ours):
                    annotate(self.loop, job, 'give back')
                    jobs.give_back(job)
            if chained:
                worker.batch = ()
            if not worker.batch:
                del process.workers[self.key]
        try:
            retry.run(unregister, attempts=liveness.UNREGISTER_ATTEMPTS,
                      begin=transaction.begin)
        except Exception:
            log.warning('Worker %s: cannot remove its record', self.key,
                        exc_info=True)
            transaction.abort()
        if self._since is not None:
            transaction.manager.unregisterSynch(self._since)
            self._since = None


_CALL = JobWorker._call_function.__code__


class Running:
    """A job of a batch that a worker runs together (see JobWorker._run):
    what the worker keeps of its attempt until the batch's transaction has
    ended."""

    def __init__(self, job, function):
        self.job = job
        self.function = function
        self.number = len(job.attempts)
        # The job was last written by the take.
        self.taken_in = tid_repr(job._p_serial)
        self.seconds = 0
        self.begun = False
        self.span = self.reported = None


class Since:
    """Notes in its JobWorker's `since` when a transaction of its thread
    is about to end (a transaction synchronizer): the next begins after."""

    def __init__(self, worker):
        self.worker = worker

    def beforeCompletion(self, txn):
        self.worker.since = time.monotonic()

    def afterCompletion(self, txn):
        pass

    def newTransaction(self, txn):
        pass


def _from_random(indexes):
    """The sequence `indexes` from a random one on, round to the one
    before it."""
    if not indexes:
        return []
    start = random.randrange(len(indexes))
    return [*indexes[start:], *indexes[:start]]


def _others(own, jobs):
    """The indexes of the shards of `jobs` not among `own`, from a random
    one on."""
    own = set(own)
    return _from_random(
        [index for index in range(jobs.shards) if index not in own])


def died(job):
    """Whether the last attempt of `job` ended as its worker process
    died: it runs alone, lest it take the jobs of its batch along."""
    return bool(job.attempts) and job.attempts[-1].outcome in (
        'died', 'died in a batch')


def annotate(loop, job, what=None):
    """Annotate the current transaction of `loop` with `what` it does to
    `job` (without `what`: with the job and its principal only)."""
    txn = transaction.get()
    if what is not None:
        txn.note(f'gocept.runner.jobs: {what} job {job.describe()}')
    if job.principal is not None:
        loop.annotate_user(txn, job.principal)
    txn.extension['job_id'] = job.id
    txn.extension['job_name'] = job.name


def job_traceback(error):
    """The traceback of `error` from the call of the job's function on, if
    it came from there (the worker's own frames say nothing to a reader)."""
    start = error.__traceback__
    while start is not None and start.tb_frame.f_code is not _CALL:
        start = start.tb_next
    if start is None or start.tb_next is None:
        start = error.__traceback__
    else:
        start = start.tb_next
    return ''.join(traceback.format_exception(type(error), error, start))


def describe(error, job):
    """The outcome of an attempt that raised `error`, and the error in
    one line."""
    if isinstance(error, TimeLimitExceeded):
        return 'time limit', (
            f'ran past its time limit of {job.time_limit:g} seconds')
    if isinstance(error, ConflictError):
        outcome = 'conflict'
    elif isinstance(error, KeyboardInterrupt):
        outcome = 'interrupted'
    else:
        outcome = 'error'
    return outcome, ' '.join(f'{type(error).__name__}: {error}'.split())


class WorkerMiddleware(Middleware):
    """The middleware of a loop of `work`: it imports the modules of job
    functions that zope.conf names, keeps its process's heartbeat going
    (see gocept.runner.jobs.liveness) and makes the loop's JobWorker, whose
    figures a process with metrics exports (see gocept.runner.jobs.metrics).

    With `burst`, the loop ends when no job is pending or running.
    `modules` are imported as well (those of gocept-jobs's --import).
    """

    def __init__(self, burst=False, modules=()):
        self.burst = burst
        self.modules = list(modules)

    def before_loop(self, loop):
        product = zope.app.appsetup.product.getProductConfiguration(
            PRODUCT_CONFIG) or {}
        registry.import_modules(
            product.get('modules', '').split(),
            f'<product-config {PRODUCT_CONFIG}>, modules')
        registry.import_modules(self.modules, '--import')
        entries = scheduler.configured(config.schedules())
        connection = lookup.context()._p_jar
        db = connection.db()
        heartbeat = liveness.acquire(db)
        try:
            watcher = wakeup.watch(loop, db)
        except BaseException:
            liveness.release(heartbeat)
            raise
        worker = _current.worker = JobWorker(
            loop, connection, heartbeat, self.burst, entries, watcher)
        # gocept.runner.metrics is imported only for a process with
        # metrics (see assembly.Run), and so are the modules of the jobs'
        # and the schedules'.
        if 'gocept.runner.sentry' in sys.modules:
            # Imported by assembly.Run only when reporting to Sentry.
            from gocept.runner import sentry
            worker.reporter = sentry.reporter_of(loop.process)
        if 'gocept.runner.metrics' in sys.modules:
            from gocept.runner.jobs import metrics
            from gocept.runner.jobs import schedulemetrics
            metrics.export(loop.process, worker.counts, heartbeat)
            schedulemetrics.export(loop.process, entries)

    def after_loop(self, loop):
        worker = getattr(_current, 'worker', None)
        if worker is None:
            return
        _current.worker = None
        try:
            worker.unregister()
        finally:
            wakeup.unwatch(loop, worker.watcher.db)
            liveness.release(worker.liveness)


@appmain(ticks=POLL, middleware=[WorkerMiddleware()])
def work():
    """Take the due jobs of the database, one per tick, and run them."""
    worker = getattr(_current, 'worker', None)
    if worker is None:
        raise RuntimeError(
            'gocept.runner.jobs.work runs in a loop made with its own'
            ' settings (gocept-runner, gocept.runner.jobs.workers)')
    return worker.tick()


def workers(count=1, burst=False, modules=(), **settings):
    """`count` workers of `work` for gocept.runner.assembly.run, which runs
    them in one process (in threads, if more than one), with `settings`
    (those of assembly.Worker).  With `burst`, each ends when no job is
    pending or running.  They import the modules of job functions that
    zope.conf names, and `modules`."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f'count must be a whole number above 0, not'
                         f' {count!r}')
    middleware = [WorkerMiddleware(burst=burst, modules=modules)]
    return [assembly.Worker(work, middleware=middleware, **settings)
            for _ in range(count)]
