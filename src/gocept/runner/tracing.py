"""Traces: a span per tick and per job attempt, made with OpenTelemetry.

With the ``opentelemetry`` extra installed, a process traces when the
application has set a tracer provider itself (then it is used as it is),
or when the SDK's environment names an exporter (``OTEL_TRACES_EXPORTER``;
``OTEL_SERVICE_NAME``, ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_PROTOCOL`` and the SDK's other variables say the
rest): then the SDK's TracerProvider is set up from it, with a
BatchSpanProcessor for each exporter, as ``opentelemetry-instrument``
would.  Otherwise, and without the extra, there is no Tracing middleware
and nothing is traced.

A tick is a span ``gocept.runner.tick``, current while the tick runs; a
job's attempt is a span ``gocept.runner.job`` within it.  A tick that did
nothing leaves no span (see TickSpan): an idle loop would otherwise send
a span for every poll.  A job carries the
trace context that was current where it was put (`inject`), and its span
is that context's child, linked to the tick that ran it.  Their attributes
are under ``gocept.runner.`` (see ATTRIBUTES).
"""

import logging
import os
import sys
import threading
import time

import transaction
from ZODB.utils import tid_repr

from gocept.runner.interfaces import ConfigurationError
from gocept.runner.middleware import Middleware


# The OpenTelemetry API (its modules context and trace), imported by
# `api()` once a process may trace: importing it costs every process
# 15-20 ms to start, which most spend on nothing.
context = trace = None


TICK = 'gocept.runner.tick'
JOB = 'gocept.runner.job'
# The attributes of the spans: the worker's or job's names, the tick's
# number, the job's id and attempt, the outcome (a Tick's or an
# Attempt's), the conflicts retried, and the id (hex, as ZODB's tid_repr
# writes it) of the transaction that committed the tick (the last one in
# it that wrote to the database) or the job's effects.
ATTRIBUTES = ('gocept.runner.worker', 'gocept.runner.tick',
              'gocept.runner.job.id', 'gocept.runner.job.name',
              'gocept.runner.job.attempt', 'gocept.runner.outcome',
              'gocept.runner.conflicts_retried', 'gocept.runner.tid')
# Tick outcomes that are errors to a trace's reader.
FAILED = ('error', 'conflict', 'unavailable', 'aborted')

# The Tracer of the running process's Tracing, if there is one.
_tracer = None
# The spans of the ticks running in each thread (a loop has its own).
_ticks = threading.local()


def api():
    """Import the OpenTelemetry API into `context` and `trace`; return
    whether it is installed (the ``opentelemetry`` extra)."""
    global context, trace
    if trace is None:
        try:
            from opentelemetry import context
            from opentelemetry import trace
        except ImportError:
            return False
        # A TickSpan is a span to the API (see there).
        trace.Span.register(TickSpan)
    return True


def provider():
    """The tracer provider to trace with, or None (see the module).

    Raises ConfigurationError for an exporter that OTEL_TRACES_EXPORTER
    names and no installed package provides.
    """
    named = os.environ.get('OTEL_TRACES_EXPORTER', '').strip().lower()
    if 'opentelemetry.trace' not in sys.modules and named in ('', 'none'):
        # Nothing here has imported the API, so no provider was set, and
        # the environment names no exporter: no tracing.
        return None
    if not api():
        return None
    given = trace.get_tracer_provider()
    if isinstance(given, trace.NoOpTracerProvider):
        return None
    if not isinstance(given, trace.ProxyTracerProvider):
        return given  # the application's own
    if os.environ.get('OTEL_SDK_DISABLED', '').strip().lower() == 'true':
        return None
    # No exporter named (unset or 'none', as the SDK reads it below): no
    # tracing, without importing the SDK's configuration, which would cost
    # every process 40-50 ms to start.
    if named in ('', 'none'):
        return None
    # Imported here: the SDK's configuration takes a while to import, which
    # every process that does not trace would pay.
    try:
        from opentelemetry.sdk import _configuration as sdk_configuration
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        return None
    try:
        # The SDK's own reading of OTEL_TRACES_EXPORTER and the OTLP
        # protocol (unset or 'none': no exporter, so no tracing).  Private,
        # but what opentelemetry-instrument runs: the same names mean the
        # same exporters.
        names = sdk_configuration._get_exporter_names('traces')
        exporters, _, _ = sdk_configuration._import_exporters(names, [], [])
    except Exception as e:
        raise ConfigurationError(
            f'OTEL_TRACES_EXPORTER={os.environ.get("OTEL_TRACES_EXPORTER")}:'
            f' {e}') from None
    if not exporters:
        return None
    made = TracerProvider()
    for exporter in exporters.values():
        made.add_span_processor(BatchSpanProcessor(exporter()))
    trace.set_tracer_provider(made)
    return made


def middleware():
    """The process's Tracing, in a list, if it traces; else an empty
    one."""
    given = provider()
    return [] if given is None else [Tracing(given)]


class Tracing(Middleware):
    """A span for each tick of every loop of the process, from the tracer
    provider `provider`; and one for each job attempt (see `job`).

    At the process's end, the spans still to be exported are flushed.
    """

    def __init__(self, provider):
        api()
        self.provider = provider
        self.tracer = provider.get_tracer('gocept.runner')
        quiet_sdk()

    def before_process(self, process):
        global _tracer
        _tracer = self.tracer

    def before_loop(self, loop):
        # Current for the loop's run: set in the context once, not for
        # every tick, which costs 3 µs of an empty tick of 13.
        parent = context.get_current()
        span = _ticks.span = TickSpan(self.tracer, loop, parent)
        _ticks.token = context.attach(trace.set_span_in_context(span, parent))
        # The thread's manager keeps its synchronizers in a weak set.
        transaction.manager.registerSynch(span)

    def after_loop(self, loop):
        span = getattr(_ticks, 'span', None)
        if span is not None:  # else before_loop did not run
            transaction.manager.unregisterSynch(span)
            context.detach(_ticks.token)
            _ticks.span = None

    def after_tick(self, loop, tick):
        # No before_tick: a tick's span knows its tick by loop.last_tick,
        # and a hook less is 10 % less of what tracing costs an empty tick.
        span = _ticks.span
        wrote = span.wrote_in is tick
        if (span.tick is not tick and not wrote and not tick.retried
                and tick.outcome in ('committed', 'doomed')):
            return  # the tick did nothing
        attributes = {'gocept.runner.outcome': tick.outcome,
                      'gocept.runner.conflicts_retried': tick.retried}
        if tick.outcome == 'committed' and wrote:
            attributes['gocept.runner.tid'] = tid_repr(span.written._p_serial)
        made = span.made_for(tick, attributes)
        if tick.outcome in FAILED:
            if tick.error is not None:
                made.record_exception(tick.error)
            made.set_status(trace.StatusCode.ERROR, tick.outcome)
        made.end()
        span.close()

    def after_process(self, process):
        global _tracer
        _tracer = None
        flush = getattr(self.provider, 'force_flush', None)
        if flush is not None:
            flush()


class TickSpan:
    """The span of the running tick of `loop` (its `last_tick`, until that
    has ended), made when it is first needed, as the child of the context
    `parent`.  A span of the API's (`api` registers it as one), with each
    of its methods.

    One for the run of the loop, current all along; between two ticks it
    is no span, as INVALID_SPAN.  The span of a tick (`span`) is made, with
    the tick's start as its start, by the first call that needs it: a span
    begun within the tick (its child), an attribute set on the current
    span, or the end of a tick that wrote, failed or retried a conflict.
    A tick that does none of these, as an idle loop's, leaves no span.

    It is also a synchronizer of the thread's transactions: `written` is
    an object that the last transaction to commit in a tick (`wrote_in`)
    wrote, whose `_p_serial` is that transaction's id (ZODB tells the tid
    to none but its storage; the objects it wrote have it).
    """

    span = tick = wrote_in = written = _candidate = None

    def __init__(self, tracer, loop, parent):
        self._tracer, self._loop, self.parent = tracer, loop, parent

    def made(self):
        """The span of the running tick, made now if it was not made yet;
        INVALID_SPAN between ticks."""
        tick = self._loop.last_tick
        if tick is None or tick.ended is not None:
            return trace.INVALID_SPAN
        return self.made_for(tick)

    def made_for(self, tick, attributes=None):
        """The span of `tick`, made now, with `attributes` too, if it was
        not made yet; else `attributes` are set on it."""
        if self.tick is not tick:
            # The tick's start by the clock of the span, from its start
            # by the monotonic clock.
            start = time.time_ns() - int(
                (time.monotonic() - tick.started) * 1e9)
            self.span = self._tracer.start_span(
                TICK, context=self.parent, attributes={
                    'gocept.runner.worker': self._loop.name,
                    'gocept.runner.tick': tick.number,
                    **(attributes or {})},
                start_time=start)
            self.tick = tick
        elif attributes:
            self.span.set_attributes(attributes)
        return self.span

    def close(self):
        """The span was ended: forget it and what the tick wrote."""
        self.span = self.tick = self.wrote_in = self.written = None

    def get_span_context(self):
        return self.made().get_span_context()

    def set_attributes(self, attributes):
        self.made().set_attributes(attributes)

    def set_attribute(self, key, value):
        self.made().set_attribute(key, value)

    def add_event(self, name, attributes=None, timestamp=None):
        self.made().add_event(name, attributes, timestamp)

    def add_link(self, context, attributes=None):
        self.made().add_link(context, attributes)

    def update_name(self, name):
        self.made().update_name(name)

    def is_recording(self):
        return self.made().is_recording()

    def set_status(self, status, description=None):
        self.made().set_status(status, description)

    def record_exception(self, exception, attributes=None, timestamp=None,
                         escaped=False):
        self.made().record_exception(exception, attributes, timestamp,
                                     escaped)

    def end(self, end_time=None):
        # Ended by after_tick, not by others.
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        pass

    # The synchronizer.

    def newTransaction(self, txn):
        pass

    def beforeCompletion(self, txn):
        # The objects that a ZODB connection is to write.
        self._candidate = None
        for resource in txn._resources:
            written = getattr(resource, '_registered_objects', None)
            if written:
                self._candidate = written[0]
                return

    def afterCompletion(self, txn):
        # transaction's Status.COMMITTED (not an abort's).
        if self._candidate is not None and txn.status == 'Committed':
            tick = self._loop.last_tick
            if tick is not None and tick.ended is None:
                self.wrote_in, self.written = tick, self._candidate
        self._candidate = None


class OnceFilter(logging.Filter):
    """Lets the first record at WARNING or above through as a WARNING, and
    the others at DEBUG."""

    def __init__(self):
        super().__init__()
        self.warned = False

    def filter(self, record):
        if record.levelno >= logging.WARNING:
            if self.warned:
                record.levelno, record.levelname = logging.DEBUG, 'DEBUG'
            else:
                self.warned = True
                record.levelno, record.levelname = (
                    logging.WARNING, 'WARNING')
        return True


def quiet_sdk():
    """Have the OpenTelemetry SDK's loggers (of the modules imported by
    now) log one WARNING at most: a collector that is down would log two
    lines for every batch of spans, and a fault of tracing changes
    nothing else."""
    once = OnceFilter()
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if (name.startswith('opentelemetry') and
                isinstance(logger, logging.Logger)):
            logger.addFilter(once)


def inject():
    """The trace context current here, to store with a job (a dict of
    W3C Trace Context headers from the global propagator), or None."""
    if 'opentelemetry.trace' not in sys.modules:
        return None  # nothing here has traced: no span is current
    if not api() or not trace.get_current_span().get_span_context(
            ).is_valid:
        return None
    # Imported here, as below: it loads the configured propagators, which
    # takes 15-50 ms, for every process that imports this module.
    from opentelemetry import propagate
    carrier = {}
    propagate.inject(carrier)
    return carrier or None


class JobSpan:
    """The span of a job's attempt while it runs (current meanwhile), if
    the process traces (see `job`)."""

    def __init__(self, job, attempt):
        tick = trace.get_current_span()
        parent, links = None, ()
        if job.trace_context:
            from opentelemetry import propagate
            parent = propagate.extract(job.trace_context)
            if trace.get_current_span(parent).get_span_context().is_valid:
                # The job's trace goes on from where it was put; the tick
                # that ran it is a link away.
                links = [trace.Link(tick.get_span_context())]
            else:
                parent = None
        self.span = _tracer.start_span(
            JOB, context=parent, links=links, attributes={
                'gocept.runner.job.id': job.id,
                'gocept.runner.job.name': job.name,
                'gocept.runner.job.attempt': attempt})
        self.token = None
        self.enter()

    def enter(self):
        """Make the span current (while the job's function runs)."""
        if self.token is None:
            self.token = context.attach(trace.set_span_in_context(self.span))

    def leave(self):
        """Make the span no longer current."""
        if self.token is not None:
            context.detach(self.token)
            self.token = None

    def end(self, outcome, conflicts_retried, tid=None, error=None):
        """End the span: the attempt's `outcome`, the conflicts retried in
        it, the transaction `tid` that committed it, the `error` it
        raised."""
        self.leave()
        span = self.span
        span.set_attribute('gocept.runner.outcome', outcome)
        span.set_attribute('gocept.runner.conflicts_retried',
                           conflicts_retried)
        if tid is not None:
            span.set_attribute('gocept.runner.tid', tid)
        if error is not None:
            span.record_exception(error)
            span.set_status(trace.StatusCode.ERROR, outcome)
        span.end()


def job(job, attempt):
    """A JobSpan for attempt number `attempt` of `job`, or None if the
    process does not trace."""
    if _tracer is None:
        return None
    return JobSpan(job, attempt)
