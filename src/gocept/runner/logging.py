"""Log lines that name the worker, the tick and the job they come from.

While a loop runs, every log record made in its thread carries the
attributes `worker` (the worker's name), `tick` (the number of the loop's
running or last tick), and while a job runs, `job_id` and `job_name`; each
is '-' where there is none.  A ``format`` in zope.conf's ``<logfile>`` may
use them (``%(worker)s``; ZConfig checks a format against the attributes
it knows, so the ``<logfile>`` needs ``arbitrary-fields true``).

`JSONFormatter` writes a record as one JSON object per line, for a log
shipper: ``formatter gocept.runner.logging.JSONFormatter`` in the
``<logfile>``.

The records get the attributes from a log record factory (see
`logging.setLogRecordFactory`) that this module installs when it is
imported, around whatever factory was there.  The loop and the job are
held in context variables: each thread, and so each loop of a process, has
its own.
"""

import contextlib
import contextvars
import datetime
import json
import logging


#: What a record's attribute says when there is no worker, tick or job.
NONE = '-'

# The MainLoop that runs in this context (thread); the running job's id
# and name.
_loop = contextvars.ContextVar('gocept.runner.logging.loop', default=None)
_job = contextvars.ContextVar('gocept.runner.logging.job', default=None)


def set_loop(loop):
    """Name `loop` (a MainLoop) and its tick on the records made from now
    on in this context; return the token for reset_loop."""
    return _loop.set(loop)


def reset_loop(token):
    """Name the loop that set_loop found on the records again."""
    _loop.reset(token)


@contextlib.contextmanager
def job_context(job):
    """Name `job` (a gocept.runner.jobs record) on the records made
    within."""
    token = _job.set((job.id, job.name))
    try:
        yield
    finally:
        _job.reset(token)


def context():
    """The worker, the tick, the job id and the job name of this context:
    what a record made now carries."""
    loop, job = _loop.get(), _job.get()
    if loop is None:
        worker = tick = NONE
    else:
        worker, tick = loop.name, loop.tick_count or NONE
    job_id, job_name = (NONE, NONE) if job is None else job
    return worker, tick, job_id, job_name


class WarnOnce:
    """Logs a mistake to `log` at WARNING the first time one of its kind is
    made, at DEBUG after that (until `reset`).  Called with the kind, the
    message and its arguments."""

    def __init__(self, log):
        self.log, self.kinds = log, set()

    def reset(self):
        self.kinds = set()

    def __call__(self, kind, message, *args):
        level = logging.DEBUG if kind in self.kinds else logging.WARNING
        self.kinds.add(kind)
        self.log.log(level, message, *args)


def _factory(make):
    def make_record(*args, **kw):
        record = make(*args, **kw)
        record.worker, record.tick, record.job_id, record.job_name = (
            context())
        return record
    make_record.wrapped = make
    return make_record


logging.setLogRecordFactory(_factory(logging.getLogRecordFactory()))


class JSONFormatter(logging.Formatter):
    """Formats a record as one line of JSON: an object of `time` (ISO 8601,
    UTC), `level`, `logger`, `message`, `worker`, `tick`, `job_id`,
    `job_name` (null where there is none) and, when the record has one,
    `exception` (the formatted traceback) and `stack`.

    It never fails: a value that JSON cannot hold is written as its repr,
    and a message whose arguments do not fit its format as the format and
    the repr of the arguments.  The format of zope.conf's ``<logfile>``
    plays no part.
    """

    def format(self, record):
        line = {
            'time': datetime.datetime.fromtimestamp(
                record.created, datetime.timezone.utc).isoformat(
                    timespec='milliseconds'),
            'level': record.levelname,
            'logger': record.name,
            'message': self._message(record),
        }
        for name in ('worker', 'tick', 'job_id', 'job_name'):
            value = getattr(record, name, NONE)
            line[name] = None if value == NONE else value
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line['exception'] = record.exc_text
        if record.stack_info:
            line['stack'] = self.formatStack(record.stack_info)
        try:
            return json.dumps(line, default=repr)
        except Exception:  # a repr that fails, a value that holds itself
            return json.dumps({name: value if isinstance(
                value, (str, int, type(None))) else _repr(value)
                for name, value in line.items()})

    def _message(self, record):
        try:
            return record.getMessage()
        except Exception:
            return f'{_repr(record.msg)} % {_repr(record.args)}'


def _repr(value):
    try:
        return repr(value)
    except Exception:
        return f'<unrepresentable {type(value).__name__}>'
