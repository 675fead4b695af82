"""The record of a job: what to call, when, and what came of each attempt.
"""

import time

import persistent


# The states of a job record.  A pending job whose eta is still to come is
# 'delayed' to gocept.runner.jobs.status.
PENDING = 'pending'
RUNNING = 'running'
DONE = 'done'
FAILED = 'failed'

# How an attempt ended.  Those of COUNTED are the job's own failures and
# count against its retries; the others were not its fault.
OUTCOMES = (
    'done',
    'error',  # the function (or the commit of its effects) raised
    'time limit',  # it ran past its time_limit and was interrupted
    'died',  # its worker process died while it ran
    # Its worker process died while it ran it together with other jobs
    # (see gocept.runner.jobs.worker), one of which may have killed it:
    # not counted, and the job runs alone next time.
    'died in a batch',
    'refused',  # no job function of its name is registered
    'conflict',  # its commit conflicted, also when tried again at once
    'interrupted',  # its worker was stopped (SIGINT) or lost the storage
)
COUNTED = ('error', 'time limit', 'died', 'refused')


class Attempt:
    """One run of a job, stored with its record.

    `worker` names the worker (process and thread) that ran it;
    `transaction` is the id (hex) of the transaction that took the job for
    it, and is in the storage's undo log and ``fsdump`` as the job's.
    `error` is the exception in one line, `traceback` the whole of it.
    """

    def __init__(self, number, worker, started):
        self.number = number
        self.worker = worker
        self.started = started
        self.ended = None
        self.outcome = None
        self.error = None
        self.traceback = None
        self.transaction = None

    @property
    def counted(self):
        """Whether it counts against the job's retries."""
        return self.outcome in COUNTED

    def __repr__(self):
        return (f'<Attempt {self.number} by {self.worker}:'
                f' {self.outcome or "running"}>')


class Job(persistent.Persistent):
    """A job: its function's registered `name`, `args` and `kwargs`, its
    options (`retries`, `time_limit`, `retry_pause`), the `principal` who
    put it, its `state` and its `attempts`.

    A job is pending from `eta` (seconds since the epoch) on; `result` is
    its function's return value once it is done.  Concurrent changes to a
    record always conflict: two workers never both run a job.
    """

    result = None
    # Where it waits while pending: the index of its shard and its key.
    shard = key = None
    # The attempts before this index do not count against its retries: a
    # failed job retried by hand has all its retries again.
    counted_from = 0
    # The name of the schedule that put it, and the time of its occurrence.
    schedule = occurrence = None
    # The trace context where it was put (see gocept.runner.tracing), a
    # dict of W3C Trace Context headers; records from before 4.0 have none.
    trace_context = None

    def __init__(self, id, name, args=(), kwargs=None, retries=3,
                 time_limit=None, retry_pause=10, principal=None, eta=None):
        self.id = id
        self.name = name
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.retries = retries
        self.time_limit = time_limit
        self.retry_pause = retry_pause
        self.principal = principal
        self.created = time.time()
        self.eta = self.created if eta is None else eta
        self.state = PENDING
        self.attempts = []

    @property
    def tries(self):
        """The attempts that count against the job's retries."""
        return sum(1 for attempt in self.attempts[self.counted_from:]
                   if attempt.counted)

    def status(self, now):
        """Its state, but 'delayed' while pending before its eta (see
        gocept.runner.jobs.status)."""
        if self.state == PENDING and self.eta > now:
            return 'delayed'
        return self.state

    @property
    def ended(self):
        """When the last attempt ended, or None."""
        return self.attempts[-1].ended if self.attempts else None

    def begin_attempt(self, worker, now):
        """Mark the job running in a new attempt by `worker`; return it."""
        attempt = Attempt(len(self.attempts) + 1, worker, now)
        self.attempts.append(attempt)
        self.state = RUNNING
        self._p_changed = True
        return attempt

    def forget_attempt(self):
        """Remove the attempt just begun, which never ran; the job is
        pending again."""
        del self.attempts[-1]
        self.state = PENDING
        self._p_changed = True

    def end_attempt(self, outcome, now, error=None, traceback=None,
                    transaction=None):
        """End the running attempt with `outcome` (see OUTCOMES)."""
        attempt = self.attempts[-1]
        attempt.outcome, attempt.ended = outcome, now
        attempt.error, attempt.traceback = error, traceback
        if transaction is not None:
            attempt.transaction = transaction
        self._p_changed = True
        return attempt

    def runs_in(self, worker, number):
        """Whether the job is running in `worker`'s attempt `number` (and
        not in another's, as it may be when `worker`'s process was held
        dead)."""
        return (self.state == RUNNING and len(self.attempts) == number and
                self.attempts[-1].worker == worker)

    def describe(self):
        """How a log line names the job: its name and id."""
        return f'{self.name} {self.id}'

    def __repr__(self):
        return f'<Job {self.describe()} {self.state}>'
