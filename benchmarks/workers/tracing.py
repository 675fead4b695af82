"""The same runner without and with tracing, in turn, in one process.

Arguments: zope.conf, ``empty`` or ``writing``, ROUNDS, SECONDS, the OTLP
endpoint of the collector (http://127.0.0.1:PORT), and the runs of a
round: ``without`` tracing, ``with`` it, ``sampled`` (with it, one trace
in a hundred sampled: OTEL_TRACES_SAMPLER=traceidratio,
OTEL_TRACES_SAMPLER_ARG=0.01), and the references ``sdk`` and
``sdk_sampled``: no tracing middleware, but the worker itself begins and
ends a span of the SDK for each tick, with the attributes of a tick's span
(on a provider as ``with``'s and ``sampled``'s): what the SDK alone costs.
Runs the runner (appmain, its whole set-up and loop) so ROUNDS times, in
turn (the order rotating from round to round), each run ticking for 1 +
SECONDS seconds.  With tracing, the loop has the Tracing middleware on the
SDK's TracerProvider with a BatchSpanProcessor and the OTLP/HTTP exporter
to the collector, as OTEL_TRACES_EXPORTER=otlp sets it up (the provider is
not made global: the runs without must not trace).  Reports, for each
run, the ticks of each second after its first, its CPU seconds (of all
the runner's threads: the exporter's count) and its seconds, and the
ticks of the runs ``with`` tracing in all (the harness counts the spans
it received).
"""

import sys
import time

from opentelemetry.exporter.otlp.proto.http.trace_exporter import \
    OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

import gocept.runner
from gocept.runner import tracing

import benchlib


zope_conf, kind, rounds, seconds, endpoint, *runs = sys.argv[1:]
rounds, seconds = int(rounds), int(seconds)
measured = {name: [] for name in runs}
# The ticks of the runs with tracing, the warm-up seconds too.
traced_ticks = 0


def traced(sampler=None):
    """The Tracing middleware on a provider of its own."""
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f'{endpoint}/v1/traces')))
    return tracing.Tracing(provider)


middleware = {'without': [], 'with': [traced()],
              'sampled': [traced(TraceIdRatioBased(0.01))]}
# The references: a provider each, no middleware.
references = {'sdk': traced(), 'sdk_sampled': traced(TraceIdRatioBased(0.01))}
for name in references:
    middleware[name] = []


def sdk_span(tracer, name, number):
    """Begin and end a span of a tick as Tracing would, by hand."""
    span = tracer.start_span(tracing.TICK, attributes={
        'gocept.runner.worker': name, 'gocept.runner.tick': number})
    span.set_attributes({'gocept.runner.outcome': 'committed',
                         'gocept.runner.conflicts_retried': 0,
                         'gocept.runner.tid': '0x03e8'})
    span.end()


def runner(name):
    """A runner ticking for 1 + SECONDS seconds, measuring each second into
    measured[name]."""
    done = 0
    bench = None
    # When the running second began, the CPU seconds and the ticks by then.
    second = None
    run = []
    reference = references.get(name)
    tracer = None if reference is None else reference.tracer

    def worker():
        nonlocal done, bench, second
        if second is None:
            bench = benchlib.db_root()['bench']
            second = (benchlib.now(), time.process_time(), 0)
        if kind == 'writing':
            bench['n'] += 1
        done += 1
        if tracer is not None:
            sdk_span(tracer, name, done)
        now = benchlib.now()
        if now - second[0] >= 1:
            cpu = time.process_time()
            run.append((done - second[2], cpu - second[1], now - second[0]))
            second = (now, cpu, done)
            if len(run) > seconds:
                measured[name].extend(run[1:])  # the first warms up
                return gocept.runner.Exit

    # The spans name the run: the harness counts those of 'with'.
    worker.__qualname__ = name
    worker = gocept.runner.appmain(
        ticks=0, middleware=middleware[name])(worker)

    def start():
        global traced_ticks
        nonlocal done, second
        done, second = 0, None
        run.clear()
        worker(None, zope_conf)
        if name == 'with':
            traced_ticks += done
        for traced in middleware[name] + [reference] * bool(reference):
            # The spans of this run are sent before the next run begins.
            traced.provider.force_flush()
    return start


starts = [runner(name) for name in runs]
for i in range(rounds):
    for start in starts[i % len(starts):] + starts[:i % len(starts)]:
        start()
for traced in [*middleware.values(), references.values()]:
    for each in traced:
        each.provider.shutdown()
benchlib.report(ticks_traced=traced_ticks, **measured)
