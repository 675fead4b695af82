"""Runners and job workers that trace, as processes of their own, and the
OTLP/HTTP collector that receives their spans, for the tests of
gocept.runner.tracing.

Run ``python -m gocept.runner.tests.tracingprograms PROGRAM ZOPE_CONF``:
``ticker`` runs `ticker` until it ends, ``work`` runs a job worker until
no job is left (``work2``: two, in threads); the exit status is the
process's.  The SDK's environment (OTEL_TRACES_EXPORTER, ...) says where
the spans go.  ``own`` runs
`ticker` with a tracer provider of the program's own, which keeps the
spans in memory, and prints a line ``SPAN NAME TICK OUTCOME`` for each at
the end.
"""

import http.server
import os
import subprocess
import sys
import threading

from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import \
    InMemorySpanExporter

import gocept.runner
from gocept.runner import assembly
from gocept.runner import environment
from gocept.runner import jobs
from gocept.runner import status
from gocept.runner.tests import programs


MODULE = 'gocept.runner.tests.tracingprograms'
JOB_MODULE = 'gocept.runner.tests.jobprograms'

_calls = 0


def ticker():
    """Tick 1 writes, tick 2 fails, tick 3 does nothing, tick 4 writes
    nothing but sets an attribute of the current span, tick 5 writes and
    ends the loop."""
    global _calls
    _calls += 1
    root = programs.root()
    if _calls == 2:
        root['ticks'] = 'never committed'
        raise ValueError('tick 2 fails')
    if _calls == 3:
        return None
    if _calls == 4:
        trace.get_current_span().set_attribute('app.checked', 'yes')
        return None
    root['ticks'] = _calls
    if _calls == 5:
        return gocept.runner.Exit
    return None


def start(directory, program, env):
    """Start `program` on the zope.conf in `directory` with `env` added to
    the environment; return the Popen.  Its output goes to the file
    ``output`` there."""
    args = [sys.executable, '-m', MODULE, program,
            os.path.join(directory, 'zope.conf')]
    with open(os.path.join(directory, 'output'), 'ab') as output:
        return subprocess.Popen(args, stdout=output, stderr=output,
                                env=dict(os.environ, **env))


class Span:
    """A span the collector received: its `name`, `attributes` (a dict),
    ids (bytes), `links` (span ids), `start` and `end` (ns since the
    epoch)."""

    def __init__(self, span):
        self.name = span.name
        self.trace_id = span.trace_id
        self.span_id = span.span_id
        self.parent_span_id = span.parent_span_id
        self.links = [(link.trace_id, link.span_id) for link in span.links]
        self.status = span.status.code
        self.start = span.start_time_unix_nano
        self.end = span.end_time_unix_nano
        self.attributes = {
            attribute.key: getattr(attribute.value,
                                   attribute.value.WhichOneof('value'))
            for attribute in span.attributes}

    def __repr__(self):
        return f'<Span {self.name} {self.attributes}>'


class Collector:
    """An OTLP/HTTP collector on 127.0.0.1: it takes the protobuf
    ExportTraceServiceRequests POSTed to /v1/traces and keeps their
    `spans` (Span objects) and `services` (the service.name of each)."""

    def __init__(self):
        self.spans = []
        self.services = []
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):

            def do_POST(self):
                body = self.rfile.read(int(self.headers['Content-Length']))
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                collector.received(request, self.path)
                answer = trace_service_pb2.ExportTraceServiceResponse()
                data = answer.SerializeToString()
                self.send_response(200)
                self.send_header('Content-Type', 'application/x-protobuf')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(
            ('127.0.0.1', 0), Handler)
        self.endpoint = f'http://127.0.0.1:{self.server.server_port}'
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def received(self, request, path):
        assert path == '/v1/traces', path
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == 'service.name':
                    self.services.append(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(map(Span, scope_spans.spans))

    def named(self, name):
        return [span for span in self.spans if span.name == name]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def main(argv):
    program, zope_conf = argv
    if program == 'own':
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        process = assembly.run([assembly.Worker(ticker, ticks=0)],
                               environment.application(zope_conf))
        for span in exporter.get_finished_spans():
            print('SPAN', span.name, span.attributes['gocept.runner.tick'],
                  span.attributes['gocept.runner.outcome'], flush=True)
    elif program == 'ticker':
        process = assembly.run([assembly.Worker(ticker, ticks=0)],
                               environment.application(zope_conf))
    else:
        # work2: two workers, in threads.
        count = 2 if program == 'work2' else 1
        process = assembly.run(
            jobs.workers(count, burst=True, modules=[JOB_MODULE]),
            environment.application(zope_conf))
    sys.exit(status.process_status(process))


if __name__ == '__main__':
    from gocept.runner.tests.tracingprograms import main as main_of_module
    main_of_module(sys.argv[1:])
