"""Traces of ticks and jobs (gocept.runner.tracing): runner and worker
processes that export their spans with the OpenTelemetry SDK, configured
by its environment, over OTLP/HTTP to a collector in the test."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
import unittest

import transaction
import ZODB
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from ZODB.utils import tid_repr

from gocept.runner import testing
from gocept.runner import tracing
from gocept.runner.interfaces import ConfigurationError
from gocept.runner.tests import jobprograms
from gocept.runner.tests import tracingprograms
from gocept.runner.tests.docpage import DOCS
from gocept.runner.tests.docpage import DocPageSuite
from gocept.runner.tick import Tick


TIMEOUT = 60


class TracingTest(unittest.TestCase):

    layer = testing.SubprocessLayer

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='gocept.runner.tracing.')
        self.addCleanup(shutil.rmtree, self.dir)
        jobprograms.write_zope_conf(self.dir, self.zodb_section())
        self.collector = tracingprograms.Collector()
        self.addCleanup(self.collector.close)

    def zodb_section(self):
        return (f'<zodb>\n  <filestorage>\n    path {self.dir}/Data.fs\n'
                '  </filestorage>\n</zodb>\n')

    def otel(self, endpoint=None, **env):
        """The SDK's environment that exports to the collector."""
        return dict({
            'OTEL_SERVICE_NAME': 'runner-under-test',
            'OTEL_TRACES_EXPORTER': 'otlp',
            'OTEL_EXPORTER_OTLP_PROTOCOL': 'http/protobuf',
            'OTEL_EXPORTER_OTLP_ENDPOINT': endpoint or self.collector.endpoint,
        }, **env)

    def run_program(self, program, env):
        process = tracingprograms.start(self.dir, program, env)
        try:
            return process.wait(TIMEOUT)
        except Exception:
            process.kill()
            process.wait()
            raise AssertionError(f'{program} still running:\n{self.output()}')

    def output(self):
        with open(os.path.join(self.dir, 'output')) as f:
            return f.read()

    def put(self, function, *args):
        """Put a job of `function`; return its id."""
        with jobprograms.client(self.zodb_section()) as client:
            transaction.begin()
            client.jobs()
            job_id = function.delay(*args)
            transaction.commit()
        return job_id

    def test_a_span_per_tick_with_its_outcome(self):
        status = self.run_program('ticker', self.otel())
        self.assertEqual(0, status, self.output())
        ticks = sorted(self.collector.named(tracing.TICK),
                       key=lambda span: span.attributes[
                           'gocept.runner.tick'])
        # Tick 3 did nothing: no span.  Tick 4 wrote nothing, but its
        # worker set an attribute of the current span.
        self.assertEqual([1, 2, 4, 5], [
            span.attributes['gocept.runner.tick'] for span in ticks])
        self.assertEqual(['committed', 'error', 'committed', 'committed'], [
            span.attributes['gocept.runner.outcome'] for span in ticks])
        self.assertEqual({'ticker'}, {
            span.attributes['gocept.runner.worker'] for span in ticks})
        self.assertEqual([0, 0, 0, 0], [
            span.attributes['gocept.runner.conflicts_retried']
            for span in ticks])
        self.assertEqual('yes', ticks[2].attributes['app.checked'])
        # An error's status is ERROR (2), the others' is unset (0).
        self.assertEqual([0, 2, 0, 0], [span.status for span in ticks])
        # A span lasts its tick: it began before the next one's.
        starts = [span.start for span in ticks]
        self.assertEqual(sorted(starts), starts)
        for span in ticks:
            self.assertLessEqual(span.start, span.end)
        self.assertEqual({'runner-under-test'},
                         set(self.collector.services))
        # The ticks that committed name their transactions: the last two
        # of the storage.
        with jobprograms.client(self.zodb_section()) as client:
            storage = client.db.storage
            last = [tid_repr(info.tid) for info in storage.iterator()][-2:]
        self.assertEqual(last, [ticks[0].attributes['gocept.runner.tid'],
                                ticks[3].attributes['gocept.runner.tid']])
        self.assertNotIn('gocept.runner.tid', ticks[1].attributes)
        self.assertNotIn('gocept.runner.tid', ticks[2].attributes)

    def test_the_applications_own_tracer_provider(self):
        # Without the SDK's environment: the application's provider is
        # used as it is.
        status = self.run_program('own', dict(OTEL_TRACES_EXPORTER='none'))
        self.assertEqual(0, status, self.output())
        self.assertEqual(
            ['SPAN gocept.runner.tick 1 committed',
             'SPAN gocept.runner.tick 2 error',
             'SPAN gocept.runner.tick 4 committed',
             'SPAN gocept.runner.tick 5 committed'],
            [line for line in self.output().splitlines()
             if line.startswith('SPAN ')])

    def test_a_span_per_job_attempt_in_the_tick_that_ran_it(self):
        with jobprograms.client(self.zodb_section()) as client:
            transaction.begin()
            counter = client.root['counter'] = jobprograms.Counter()
            done = jobprograms.mark.delay(counter)
            failed = jobprograms.fail.delay('x')
            transaction.commit()
        status = self.run_program('work', self.otel())
        self.assertEqual(0, status, self.output())
        spans = self.collector.named(tracing.JOB)
        [done_span] = [span for span in spans if span.attributes[
            'gocept.runner.job.id'] == done]
        self.assertEqual({
            'gocept.runner.job.id': done,
            'gocept.runner.job.name': 'gocept.runner.tests.jobprograms:mark',
            'gocept.runner.job.attempt': 1,
            'gocept.runner.outcome': 'done',
            'gocept.runner.conflicts_retried': 0,
            'gocept.runner.tid': done_span.attributes['gocept.runner.tid'],
        }, done_span.attributes)
        with jobprograms.client(self.zodb_section()) as client:
            record = client.record(done)
            self.assertEqual('done', record.state)
            # The tid is the transaction that committed the job's effects:
            # its 'done' mark, the job's last change.
            self.assertEqual(tid_repr(record._p_serial),
                             done_span.attributes['gocept.runner.tid'])
            self.assertIsNone(record.trace_context)
        # `fail` raises in each of its 3 attempts: 3 spans, with no tid.
        failed_spans = sorted(
            (span for span in spans
             if span.attributes['gocept.runner.job.id'] == failed),
            key=lambda span: span.attributes['gocept.runner.job.attempt'])
        self.assertEqual([1, 2, 3], [
            span.attributes['gocept.runner.job.attempt']
            for span in failed_spans])
        self.assertEqual({'error'}, {
            span.attributes['gocept.runner.outcome']
            for span in failed_spans})
        self.assertFalse(any('gocept.runner.tid' in span.attributes
                             for span in failed_spans))
        # Put without a trace, each is the child of the tick that ran it.
        ticks = {span.span_id: span
                 for span in self.collector.named(tracing.TICK)}
        for span in spans:
            tick = ticks[span.parent_span_id]
            self.assertEqual(tick.trace_id, span.trace_id)
            self.assertEqual('work', tick.attributes['gocept.runner.worker'])
            self.assertEqual([], span.links)

    def test_workers_in_threads_trace_their_own_ticks(self):
        with jobprograms.client(self.zodb_section()) as client:
            transaction.begin()
            counters = client.counters(6)
            ids = [jobprograms.slow_mark.delay(counter, 0.05)
                   for counter in counters]
            transaction.commit()
        status = self.run_program('work2', self.otel())
        self.assertEqual(0, status, self.output())
        spans = self.collector.named(tracing.JOB)
        self.assertEqual(sorted(ids), sorted(
            span.attributes['gocept.runner.job.id'] for span in spans))
        ticks = {span.span_id: span
                 for span in self.collector.named(tracing.TICK)}
        # Each job's span is the child of a tick of the thread that ran it,
        # and each tick ran one job at most.
        parents = [span.parent_span_id for span in spans]
        self.assertTrue(all(parent in ticks for parent in parents))
        self.assertEqual(len(parents), len(set(parents)))

    def test_a_job_goes_on_with_the_trace_that_put_it(self):
        # The test is the application that puts the job in a span of its
        # own, from a tracer provider it does not make global.
        tracer = TracerProvider().get_tracer('a web request')
        with jobprograms.client(self.zodb_section()) as client:
            transaction.begin()
            counter = client.root['counter'] = jobprograms.Counter()
            with tracer.start_as_current_span('POST /counter') as request:
                job_id = jobprograms.mark.delay(counter)
            transaction.commit()
            self.assertEqual(
                {'traceparent'}, set(client.record(job_id).trace_context))
        status = self.run_program('work', self.otel())
        self.assertEqual(0, status, self.output())
        [span] = self.collector.named(tracing.JOB)
        context = request.get_span_context()
        self.assertEqual(context.trace_id.to_bytes(16, 'big'), span.trace_id)
        self.assertEqual(context.span_id.to_bytes(8, 'big'),
                         span.parent_span_id)
        # The tick that ran it is linked.
        [tick] = [tick for tick in self.collector.named(tracing.TICK)
                  if (tick.trace_id, tick.span_id) in span.links]
        self.assertEqual('work', tick.attributes['gocept.runner.worker'])
        self.assertNotEqual(tick.trace_id, span.trace_id)

    def test_a_job_record_from_before_tracing_runs(self):
        job_id = self.put(jobprograms.add, 1, 2)
        garbled = self.put(jobprograms.add, 3, 4)
        with jobprograms.client(self.zodb_section()) as client:
            # As a record stored before the field was: without it.
            record = client.record(job_id)
            record.__dict__.pop('trace_context', None)
            record._p_changed = True
            # A trace context that means nothing.
            client.record(garbled).trace_context = {'traceparent': 'x-y'}
            transaction.commit()
            self.assertNotIn('trace_context', client.record(job_id).__dict__)
        status = self.run_program('work', self.otel())
        self.assertEqual(0, status, self.output())
        spans = self.collector.named(tracing.JOB)
        self.assertEqual(['done', 'done'], [
            span.attributes['gocept.runner.outcome'] for span in spans])
        # Both are children of the ticks that ran them.
        ticks = {span.span_id for span in self.collector.named(tracing.TICK)}
        self.assertTrue(all(span.parent_span_id in ticks for span in spans))
        with jobprograms.client(self.zodb_section()) as client:
            self.assertEqual(3, client.record(job_id).result)
            self.assertEqual(7, client.record(garbled).result)

    def test_a_collector_that_is_down_changes_no_outcome(self):
        port = testing.free_port()
        # The SDK waits for the collector up to this timeout (seconds), at
        # the process's end, too.
        down = self.otel(endpoint=f'http://127.0.0.1:{port}',
                         OTEL_EXPORTER_OTLP_TIMEOUT='2')
        status = self.run_program('ticker', down)
        self.assertEqual(0, status, self.output())
        with jobprograms.client(self.zodb_section()) as client:
            transaction.begin()
            self.assertEqual(5, client.root['ticks'])
            counter = client.root['counter'] = jobprograms.Counter()
            job_id = jobprograms.mark.delay(counter)
            transaction.commit()
        status = self.run_program('work', down)
        self.assertEqual(0, status, self.output())
        with jobprograms.client(self.zodb_section()) as client:
            record = client.record(job_id)
            self.assertEqual('done', record.state)
            self.assertEqual(1, record.attempts[-1].number)
            self.assertEqual(1, client.root['counter'].count)
        # One WARNING per process: the ticker's and the worker's.
        lines = [line for line in self.output().splitlines()
                 if line.startswith(('WARNING', 'ERROR', 'CRITICAL'))]
        self.assertEqual(
            ['ERROR gocept.runner.runner Error in worker ticker,'
             ' transaction aborted',
             'WARNING opentelemetry.exporter.otlp.proto.http.trace_exporter',
             'WARNING opentelemetry.exporter.otlp.proto.http.trace_exporter'],
            [line[:line.index(' ', line.index(' ') + 1)]
             if line.startswith('WARNING') else line for line in lines])

    def test_without_the_extra_nothing_is_traced(self):
        # A Python that cannot import opentelemetry, in the SDK's
        # environment: a runner runs, and a job is put, as ever.
        code = (
            'import sys\n'
            'sys.modules["opentelemetry"] = None\n'
            'import transaction\n'
            'import gocept.runner\n'
            'from gocept.runner import tracing\n'
            'from gocept.runner.tests import jobprograms\n'
            '@gocept.runner.once()\n'
            'def put():\n'
            '    counter = jobprograms.root()["counter"] = '
            'jobprograms.Counter()\n'
            '    print("job", jobprograms.mark.delay(counter))\n'
            'put(None, sys.argv[1])\n'
            'print("middleware", tracing.middleware(), tracing.trace)\n')
        result = subprocess.run(
            [sys.executable, '-c', code, os.path.join(self.dir, 'zope.conf')],
            env=dict(os.environ, **self.otel()), capture_output=True,
            text=True, timeout=TIMEOUT)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertIn('middleware [] None', result.stdout)
        job_id = result.stdout.split('job ')[1].split()[0]
        self.assertEqual([], self.collector.spans)
        with jobprograms.client(self.zodb_section()) as client:
            record = client.record(job_id)
            self.assertEqual('pending', record.state)
            self.assertIsNone(record.trace_context)

    def test_no_exporter_no_tracing(self):
        # OTEL_TRACES_EXPORTER unset is the SDK's 'none'.
        env = self.otel()
        status = self.run_program('ticker', dict(env, OTEL_TRACES_EXPORTER=''))
        self.assertEqual(0, status, self.output())
        self.assertEqual([], self.collector.spans)


class ConfigurationTest(unittest.TestCase):
    """When a process traces: the SDK's environment (this process has no
    tracer provider of its own)."""

    def setUp(self):
        saved = os.environ.get('OTEL_TRACES_EXPORTER')
        self.addCleanup(self.restore, saved)

    def restore(self, saved):
        os.environ.pop('OTEL_TRACES_EXPORTER', None)
        if saved is not None:
            os.environ['OTEL_TRACES_EXPORTER'] = saved

    def test_no_exporter_no_middleware(self):
        os.environ.pop('OTEL_TRACES_EXPORTER', None)
        self.assertEqual([], tracing.middleware())
        os.environ['OTEL_TRACES_EXPORTER'] = 'none'
        self.assertEqual([], tracing.middleware())

    def test_an_exporter_that_is_not_installed(self):
        os.environ['OTEL_TRACES_EXPORTER'] = 'no-such-exporter'
        with self.assertRaises(ConfigurationError) as raised:
            tracing.middleware()
        self.assertIn('OTEL_TRACES_EXPORTER=no-such-exporter:',
                      str(raised.exception))
        self.assertIn('no-such-exporter', str(raised.exception))


class TickSpanTest(unittest.TestCase):
    """The span of a tick, made when first needed: the middleware's hooks
    around ticks of a fake loop, on the SDK with an in-memory exporter."""

    def setUp(self):
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import \
            InMemorySpanExporter
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.addCleanup(provider.shutdown)
        self.tracer = provider.get_tracer('test')
        self.middleware = tracing.Tracing(provider)
        self.loop = types.SimpleNamespace(name='worker', tick_count=0,
                                          last_tick=None)
        self.middleware.before_loop(self.loop)
        self.addCleanup(self.middleware.after_loop, self.loop)

    def tick(self, work=None, outcome='committed', loop=None):
        """Run a tick of the fake loop (as MainLoop.tick does) that calls
        `work`; return the spans exported for it."""
        loop = self.loop if loop is None else loop
        self.exporter.clear()
        loop.tick_count += 1
        tick = loop.last_tick = Tick(loop.tick_count)
        if work is not None:
            work()
        tick.outcome, tick.ended = outcome, time.monotonic()
        self.middleware.after_tick(loop, tick)
        return list(self.exporter.get_finished_spans())

    def database(self):
        """The root of a connection to a database of its own."""
        db = ZODB.DB(None)
        self.addCleanup(db.close)
        connection = db.open()
        self.addCleanup(connection.close)
        self.addCleanup(transaction.abort)
        return connection.root()

    def test_a_tick_that_did_nothing_makes_no_span(self):
        self.assertEqual([], self.tick())
        self.assertEqual([], self.tick(outcome='doomed'))

    def test_one_that_failed_makes_one(self):
        [span] = self.tick(outcome='error')
        self.assertEqual(tracing.TICK, span.name)
        self.assertEqual('error', span.attributes['gocept.runner.outcome'])
        self.assertEqual(1, span.attributes['gocept.runner.tick'])
        self.assertEqual('worker', span.attributes['gocept.runner.worker'])

    def test_one_that_wrote_makes_one_naming_the_transaction(self):
        root = self.database()

        def write():
            root['count'] = 1
            transaction.commit()
        [span] = self.tick(write)
        self.assertEqual(tid_repr(root._p_serial),
                         span.attributes['gocept.runner.tid'])

    def test_one_that_committed_nothing_names_no_transaction(self):
        root = self.database()
        [span] = self.tick(outcome='error')
        self.assertNotIn('gocept.runner.tid', span.attributes)
        # A write between ticks is no tick's.
        root['count'] = 1
        transaction.commit()
        self.assertEqual([], self.tick())

    def test_a_span_begun_in_the_tick_is_its_child(self):
        def child():
            with self.tracer.start_as_current_span('GET /api'):
                time.sleep(0.001)
        started = time.time_ns()
        child_span, tick_span = self.tick(child)
        self.assertEqual(tracing.TICK, tick_span.name)
        self.assertEqual(tick_span.context.span_id,
                         child_span.parent.span_id)
        # The tick's span began with the tick, before its child.
        self.assertLessEqual(started, tick_span.start_time)
        self.assertLess(tick_span.start_time, child_span.start_time)
        self.assertEqual('committed',
                         tick_span.attributes['gocept.runner.outcome'])

    def test_an_attribute_set_on_the_current_span_makes_it(self):
        def mark():
            current = trace.get_current_span()
            self.assertTrue(current.is_recording())
            current.set_attribute('app.checked', 3)
            current.add_event('checked')
        [span] = self.tick(mark)
        self.assertEqual(3, span.attributes['app.checked'])
        self.assertEqual(['checked'], [event.name for event in span.events])

    def test_between_ticks_there_is_no_span(self):
        self.tick(outcome='error')
        current = trace.get_current_span()
        self.assertFalse(current.get_span_context().is_valid)
        self.assertFalse(current.is_recording())
        current.set_attribute('app.between', 1)
        self.assertEqual([], self.tick())

    def test_after_the_loop_the_context_is_that_of_before_it(self):
        self.middleware.after_loop(self.loop)  # a loop at a time
        loop = types.SimpleNamespace(name='other', tick_count=0,
                                     last_tick=None)
        with self.tracer.start_as_current_span('outside') as outside:
            middleware = tracing.Tracing(self.middleware.provider)
            middleware.before_loop(loop)
            self.assertIsNot(outside, trace.get_current_span())
            loop.tick_count += 1
            tick = loop.last_tick = Tick(1)
            tick.outcome, tick.ended = 'error', time.monotonic()
            middleware.after_tick(loop, tick)
            middleware.after_loop(loop)
            self.assertIs(outside, trace.get_current_span())
        # The tick's span is the child of the context the loop began in.
        [tick_span] = [span for span in self.exporter.get_finished_spans()
                       if span.name == tracing.TICK]
        self.assertEqual(outside.get_span_context().span_id,
                         tick_span.parent.span_id)


def test_suite():
    suite = unittest.TestSuite()
    loader = unittest.defaultTestLoader
    suite.addTest(loader.loadTestsFromTestCase(TracingTest))
    suite.addTest(loader.loadTestsFromTestCase(ConfigurationTest))
    suite.addTest(loader.loadTestsFromTestCase(TickSpanTest))
    if os.path.exists(os.path.join(DOCS, 'howto', 'tracing.rst')):
        page = DocPageSuite('howto/tracing.rst')
        page.layer = testing.DocsLayer
        suite.addTest(page)
    return suite
