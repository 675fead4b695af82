"""Prometheus metrics of a runner: served over HTTP, or written to a file.

A daemon serves them (``--metrics [HOST:]PORT``, ``metrics=``) for
Prometheus to scrape; a ``once`` job (cron) writes them at its end into a
file of node_exporter's textfile collector (``--metrics-file PATH``,
``metrics_file=``).  Every figure carries the label ``worker``, the dotted
name of the worker: each worker's loop is measured by a Measure, and one
Exporter per process serves or writes the figures of all (a single runner's
Metrics is both, for its one worker).  Metrics never change what the
runner does: what fails on their account (a port that is taken, a file that
cannot be written or read back) is one WARNING, and the job goes on.

This needs the ``metrics`` extra (prometheus_client).
"""

import importlib.metadata
import io
import ipaddress
import logging
import math
import re
import selectors
import signal
import socket
import socketserver
import sys
import threading
import time
import wsgiref.simple_server
from bisect import bisect_left

from gocept.runner.config import ConfigurationError
from gocept.runner.middleware import Middleware
from gocept.runner.status import exit_status
from gocept.runner.wakeup import Wakeup


try:
    import prometheus_client
    import prometheus_client.core
    import prometheus_client.parser
    import prometheus_client.utils
except ImportError:  # the extra is not installed
    prometheus_client = None


log = logging.getLogger(__name__)

MISSING = ('Metrics need the metrics extra of gocept.runner (prometheus_client'
           ' is not installed): pip install "gocept.runner[metrics]"')

# The buckets (seconds) of the tick duration: from ticks of a millisecond to
# the hour of a nightly job.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
           5, 10, 30, 60, 120, 300, 600, 1800, 3600, math.inf)

# The value of the label `outcome` of ticks_total for a Tick's outcome
# (ticks aborted by SystemExit or KeyboardInterrupt are not counted).
TICK_OUTCOMES = {'committed': 'committed', 'doomed': 'doomed',
                 'error': 'failed', 'conflict': 'conflict',
                 'unavailable': 'unavailable', 'aborted': None}

ITEM_OUTCOMES = ('committed', 'failed', 'conflict')

LAST_SUCCESS = 'gocept_runner_last_success_timestamp_seconds'

# Seconds the server waits for each part of a client's request (and for the
# client to take the answer) before it closes the connection.
CLIENT_TIMEOUT = 10

VERSION = importlib.metadata.version('gocept.runner')


def address(value):
    """The (host, port) that `value` names: a port (127.0.0.1), HOST:PORT
    or [IPV6]:PORT.

    Raises ConfigurationError for anything else.
    """
    text = str(value)
    match = re.fullmatch(r'(?:\[([0-9A-Fa-f:.]+)\]:|([^:\[\]]+):)?([0-9]+)',
                         text)
    host = port = None
    if match is not None:
        ipv6, name, port = match.groups()
        port = int(port)
        host = ipv6 or name or '127.0.0.1'
        if ipv6 is not None:
            try:
                ipaddress.IPv6Address(ipv6)
            except ValueError:
                host = None
        elif not re.fullmatch(r'[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?',
                              host):
            host = None
    if isinstance(value, bool) or host is None or not 0 < port < 65536:
        raise ConfigurationError(
            f'{value!r} is not an address to serve metrics on:'
            ' give [HOST:]PORT')
    return host, port


def available():
    """Raise ConfigurationError if the metrics extra is not installed."""
    if prometheus_client is None:
        raise ConfigurationError(MISSING)


def from_options(options, worker):
    """The Metrics that the loop options `options` ask for (``metrics``,
    ``metrics_file``, which are taken out of them), or None."""
    serve = options.pop('metrics', None)
    path = options.pop('metrics_file', None)
    if serve is None and path is None:
        return None
    return Metrics(serve, path, worker)


def dotted_name(worker):
    """The worker's module and qualified name, as the label `worker`."""
    module = getattr(worker, '__module__', None)
    name = getattr(worker, '__qualname__', None) or repr(worker)
    return f'{module}.{name}' if module else name


class Measure(Middleware):
    """Measures the loops of one worker, as plain numbers that only the
    loop's thread changes; an Exporter reads them.

    `worker` (else the loop's) gives the label ``worker``.
    """

    def __init__(self, worker=None):
        self.worker = None if worker is None else dotted_name(worker)
        # prometheus_client's metric objects take a lock for each change,
        # which costs an empty tick a fifth of its time: a scrape reads
        # these numbers through _Collector instead.
        # By the outcome of the Tick.
        self.ticks = dict.fromkeys(TICK_OUTCOMES, 0)
        self.items = dict.fromkeys(ITEM_OUTCOMES, 0)
        self.conflicts = 0
        # The ticks' durations: how many fell into each bucket (not
        # cumulative; the last is +Inf's), and their sum.
        self.durations = [0] * len(BUCKETS)
        self.duration_sum = 0.0
        # When this run last succeeded (Unix time), else None; the last
        # success the metrics give (also of a run before).  A tick
        # succeeds when it commits (or the worker dooms it) and no item of
        # it fails; a once run when its tick succeeds and its exit status
        # is 0, which is known at its end.
        self.succeeded_at = None
        self.last_success = 0
        # When the last tick succeeded, else None; the exit status of a
        # once run that has ended, else None.
        self.tick_succeeded_at = None
        self.once_status = None
        # The last run (for the file): success, end, duration.
        self.last_run = None
        self.outage = None

    def before_loop(self, loop):
        self.worker = self.worker or dotted_name(loop.worker)
        self.succeeded_at = self.tick_succeeded_at = self.once_status = None
        self.outage = loop.outage

    def after_tick(self, loop, tick):
        # On the path of every tick: kept short.
        outcome = tick.outcome
        self.ticks[outcome] += 1
        if tick.conflicts:
            self.conflicts += tick.conflicts
        seconds = tick.ended - tick.started
        self.durations[bisect_left(BUCKETS, seconds)] += 1
        self.duration_sum += seconds
        items = tick.items
        items_failed = False
        if items is not None and (items.committed or items.failed):
            self.items['committed'] += items.committed
            self.items['failed'] += items.failed - items.conflicted
            self.items['conflict'] += items.conflicted
            self.conflicts += items.conflicts
            items_failed = items.failed > 0
        if outcome in ('committed', 'doomed') and not items_failed:
            self.tick_succeeded_at = time.time()
            if not loop.once:
                self.succeeded_at = self.last_success = self.tick_succeeded_at
        else:
            self.tick_succeeded_at = None

    def after_loop(self, loop):
        if loop.once:
            self.once_status = exit_status(loop)
            if self.succeeded():
                self.succeeded_at = self.last_success = self.tick_succeeded_at

    def succeeded(self):
        """Whether the run succeeded: its last tick did and, if it is a once
        run, its exit status is 0."""
        return (self.tick_succeeded_at is not None and
                self.once_status in (None, 0))


class Exporter(Middleware):
    """The metrics of a process: one registry (`registry`) with the figures
    of every Measure in `measures`, one family each, and those of the
    process; served on `serve` (a (host, port) or what `address` takes)
    and/or written to the file `path`.

    Used as a context manager around a run: the run's duration counts from
    its start; at its end the server stops and the file is written.  As
    the process's middleware, it serves while the loops run.
    """

    def __init__(self, serve=None, path=None):
        available()
        self.address = None if serve is None else address(serve)
        self.path = path
        self.measures = []
        # Those of `add`.
        self.collectors = []
        self.server = None
        # When the run began (Unix time).
        self.started = None
        # auto_describe: the process's collector has no describe(); its
        # names are those of what it collects.
        self.registry = prometheus_client.CollectorRegistry(
            auto_describe=True)
        self.registry.register(_Collector(self.measures))
        prometheus_client.ProcessCollector(
            namespace='gocept_runner', registry=self.registry)

    def measure(self, worker, copy_of=None):
        """A new Measure of `worker`, whose figures this exports.

        `copy_of` is the Measure of a loop whose copy this one's loop is
        (the same worker with the same settings, as gocept-jobs's
        ``--workers`` runs): their figures are one sample of their label,
        counts summed.  Raises ConfigurationError if another has the same
        label.
        """
        measure = Measure(worker)
        if copy_of is not None:
            if copy_of not in self.measures or (
                    copy_of.worker != measure.worker):
                raise ValueError(f'{copy_of!r} is no Measure of {worker!r}'
                                 ' here')
        elif any(m.worker == measure.worker for m in self.measures):
            raise ConfigurationError(
                f'Two workers named {measure.worker}: their metrics would'
                ' not be told apart')
        self.measures.append(measure)
        return measure

    def add(self, collector):
        """Export the figures of `collector` as well (an object with
        prometheus_client's ``collect()`` and ``describe()``), once."""
        if collector not in self.collectors:
            self.collectors.append(collector)
            self.registry.register(collector)

    def __enter__(self):
        self.started = time.time()
        return self

    def __exit__(self, *exc_info):
        self.stop_serving()
        if self.path is not None:
            self.write()

    def before_process(self, process):
        self.serve()

    def after_process(self, process):
        self.stop_serving()

    def serve(self):
        """Serve the metrics over HTTP on `address`, if given (a WARNING if
        that fails)."""
        if self.address is None:
            return
        host, port = self.address
        try:
            self.server = _Server(host, port, self.registry)
        except OSError as e:
            log.warning('Cannot serve metrics on %s: %s', _netloc(host, port),
                        e.strerror or e)
        else:
            log.debug('Serving metrics on http://%s/metrics',
                      _netloc(host, port))

    def stop_serving(self):
        if self.server is not None:
            self.server.stop()
            self.server = None

    def write(self):
        """End the run of every Measure and write the metrics to `path`,
        atomically (a WARNING if that fails).

        A worker whose run had no success keeps the last success that the
        file of the run before gives for its label.
        """
        now = time.time()
        failed = []
        for measure in self.measures:
            measure.last_run = (measure.succeeded(), now,
                                now - (self.started or now))
            if measure.succeeded_at is None:
                failed.append(measure)
        if failed:
            previous = self.previous_successes()
            for measure in failed:
                if measure.worker in previous:
                    measure.last_success = previous[measure.worker]
        try:
            prometheus_client.write_to_textfile(self.path, self.registry)
        except OSError as e:
            log.warning('Cannot write the metrics file %s: %s', self.path,
                        e.strerror or e)

    def previous_successes(self):
        """The last success of each worker (by its label) that the file of
        the run before gives."""
        successes = {}
        try:
            with open(self.path, encoding='utf-8') as f:
                text = f.read()
            for family in prometheus_client.parser \
                    .text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == LAST_SUCCESS:
                        successes[sample.labels.get('worker')] = sample.value
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            reason = e.strerror if isinstance(e, OSError) else 'not metrics'
            log.warning('Cannot read the last success from the metrics'
                        ' file %s: %s', self.path, reason or e)
            successes = {}
        return successes


class Metrics(Measure):
    """Measures a loop; serves the metrics on `serve` (a (host, port) or
    what `address` takes) and/or writes them to the file `path`: a single
    runner's Exporter, of this one Measure.

    The server runs from the start of the loop to its end.  The file is
    written when the loop has ended; used as a context manager around the
    set-up of the application and the loop, also when the run fails before
    its loop.  `worker` (else the loop's) gives the label ``worker``.
    Each Metrics has a registry of its own (`registry`).
    """

    def __init__(self, serve=None, path=None, worker=None):
        self.exporter = Exporter(serve, path)
        super().__init__(worker)
        self.exporter.measures.append(self)
        self.registry = self.exporter.registry
        self.path = path
        # Whether it is in a `with` block; whether the file is written.
        self.entered = False
        self.written = False

    def __enter__(self):
        self.entered = True
        self.written = False
        self.succeeded_at = self.tick_succeeded_at = None
        self.exporter.started = time.time()
        return self

    def __exit__(self, *exc_info):
        self.entered = False
        # The run failed before (or while starting) its loop.
        if self.path is not None and not self.written:
            self.worker = self.worker or 'unknown'
            self.write()

    def before_loop(self, loop):
        if not self.entered:
            self.exporter.started = time.time()
        self.written = False
        super().before_loop(loop)
        self.exporter.serve()

    def after_loop(self, loop):
        super().after_loop(loop)
        self.exporter.stop_serving()
        if self.path is not None:
            self.write()

    def write(self):
        """Write the metrics to `path` (see Exporter.write)."""
        self.written = True
        self.exporter.write()


class _Collector:
    """The figures of Measures, as prometheus_client's metric families: one
    family for each figure, a sample for each worker (the Measures of
    copies of one worker give one sample: counts summed, the latest time,
    the worst state)."""

    def __init__(self, measures):
        self.measures = measures

    def collect(self):
        # A Measure without a worker has seen no loop yet.
        groups = {}
        for measure in list(self.measures):
            if measure.worker is not None:
                groups.setdefault(measure.worker, []).append(measure)
        if not groups:
            return []
        ended = {worker: group for worker, group in groups.items()
                 if all(m.last_run is not None for m in group)}
        return self._families(groups, ended, runs=bool(ended))

    def describe(self):
        """Every family that `collect` gives, without samples: a registry
        selects series by their names (``/metrics?name[]=NAME``)."""
        return self._families({}, {}, runs=True)

    def _families(self, groups, ended, runs):
        """The families with samples of `groups` (the Measures of each
        label); those of the last run (with samples of `ended`) if
        `runs`."""
        core = prometheus_client.core
        families = []

        def family(kind, name, documentation, value=None, labels=(),
                   of=groups):
            # `value`: a function of a label's Measures giving its sample.
            metric = kind(name, documentation, labels=['worker', *labels])
            families.append(metric)
            if value is not None:
                for worker, group in of.items():
                    metric.add_metric([worker], value(group))
            return metric

        ticks = family(core.CounterMetricFamily, 'gocept_runner_ticks',
                       'Ticks by outcome.', labels=['outcome'])
        for worker, group in groups.items():
            for outcome, label in TICK_OUTCOMES.items():
                if label is not None:
                    ticks.add_metric([worker, label], sum(
                        m.ticks[outcome] for m in group))
        family(core.CounterMetricFamily, 'gocept_runner_conflicts',
               'Conflicts on commit, retried or not.',
               lambda group: sum(m.conflicts for m in group))
        durations = family(
            core.HistogramMetricFamily, 'gocept_runner_tick_duration_seconds',
            "Seconds from a tick's begin to the end of its commit.")
        for worker, group in groups.items():
            counts = [sum(column) for column in zip(
                *(list(m.durations) for m in group))]
            durations.add_metric(
                [worker], histogram_buckets(counts),
                sum(m.duration_sum for m in group))
        family(core.GaugeMetricFamily, LAST_SUCCESS,
               'When the worker last succeeded (Unix time).',
               lambda group: max(m.last_success for m in group))
        family(core.GaugeMetricFamily, 'gocept_runner_storage_unavailable',
               'Whether the loop backs off from a storage outage (1) or not'
               ' (0).', lambda group: max(map(_unavailable, group)))
        family(core.CounterMetricFamily,
               'gocept_runner_storage_unavailable_seconds',
               'Seconds the storage was unavailable.',
               lambda group: max(0 if m.outage is None else m.outage.seconds()
                                 for m in group))
        items = family(core.CounterMetricFamily, 'gocept_runner_items',
                       'Items of transaction_per_item by outcome.',
                       labels=['outcome'])
        for worker, group in groups.items():
            for outcome in ITEM_OUTCOMES:
                items.add_metric([worker, outcome], sum(
                    m.items[outcome] for m in group))
        family(core.InfoMetricFamily, 'gocept_runner',
               'The version of gocept.runner.',
               lambda group: {'version': VERSION})
        if runs:
            family(core.GaugeMetricFamily, 'gocept_runner_last_run_success',
                   'Whether the last run succeeded (1) or failed (0).',
                   lambda group: min(1 if m.last_run[0] else 0
                                     for m in group), of=ended)
            family(core.GaugeMetricFamily,
                   'gocept_runner_last_run_timestamp_seconds',
                   'When the last run ended (Unix time).',
                   lambda group: max(m.last_run[1] for m in group), of=ended)
            family(core.GaugeMetricFamily,
                   'gocept_runner_last_run_duration_seconds',
                   'How many seconds the last run took.',
                   lambda group: max(m.last_run[2] for m in group), of=ended)
        return families


def histogram_buckets(counts):
    """The buckets of a HistogramMetricFamily's sample from `counts`, how
    many fell into each of BUCKETS (not cumulative)."""
    buckets, total = [], 0
    for bound, number in zip(BUCKETS, counts):
        total += number
        buckets.append((prometheus_client.utils.floatToGoString(bound), total))
    return buckets


class _Server:
    """Serves the metrics of `registry` over HTTP on `host`:`port` from a
    thread of its own until `stop`.

    Raises OSError if it cannot listen there.

    prometheus_client's app answers; the server around it is ours, on
    wsgiref as prometheus_client.start_wsgi_server's is, because that one
    (0.26) prints a traceback on stderr for each client that sends nothing
    or resets its connection, accepts a queue of 5 connections, looks the
    host's name up in the DNS when it binds, takes up to half a second to
    stop, and takes signals in its thread; the tests in test_metrics.py
    hold each of these.  It is not faster: benchmarks/metrics.py measures
    what serving costs a runner's ticks, and that is within its noise.
    """

    def __init__(self, host, port, registry):
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        self.httpd = _HTTPServer(address, family)
        self.httpd.set_app(prometheus_client.make_wsgi_app(registry))
        self._stop = Wakeup()
        self._stop.open()
        ready = threading.Event()
        self.thread = threading.Thread(
            target=self._serve, args=(ready,), daemon=True,
            name='gocept.runner metrics')
        self.thread.start()
        ready.wait()

    def _serve(self, ready):
        try:
            # Signals go to the runner's thread, whose file descriptors
            # the C handler may write to (see signal.set_wakeup_fd).
            signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        finally:
            ready.set()
        with selectors.DefaultSelector() as selector:
            selector.register(self.httpd, selectors.EVENT_READ)
            selector.register(self._stop, selectors.EVENT_READ)
            while all(key.fileobj is self.httpd
                      for key, _ in selector.select()):
                self.httpd.handle_request()

    def stop(self):
        """Stop serving, at once, and close the socket."""
        self._stop.wake()
        self.thread.join()
        self.httpd.server_close()
        self._stop.close()


class _HTTPServer(socketserver.ThreadingMixIn,
                  wsgiref.simple_server.WSGIServer):

    # A thread for each scrape: a client slow to send its request holds no
    # other one up.
    daemon_threads = True
    # The kernel's queue of connections not yet accepted.  socketserver's 5
    # overflows in a burst of connects (a port scan, probes), and a scrape
    # behind them waits for its connect to be retried, a second or more.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, address, family):
        self.address_family = family
        super().__init__(address, _Scrape)

    def server_bind(self):
        # HTTPServer's would look the host's name up in the DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
        self.setup_environ()

    def handle_error(self, request, client_address):
        # socketserver's prints a traceback on stderr: for a client that
        # sent nothing before the timeout, reset its connection, ...
        error = sys.exc_info()[1]
        self.failed(client_address, f'{type(error).__name__}: {error}')

    def failed(self, client_address, reason):
        """A request from `client_address` failed for `reason`: what a
        client does is no news (a DEBUG line)."""
        log.debug('A metrics request from %s failed: %s',
                  _netloc(*client_address[:2]), reason)


class _Scrape(wsgiref.simple_server.WSGIRequestHandler):

    def setup(self):
        self.timeout = CLIENT_TIMEOUT  # as it is now, not at the import
        super().setup()
        # wsgi.errors: where wsgiref writes the traceback of a request
        # whose answer failed (prometheus_client cannot read its Accept
        # header, the client does not take the answer).
        self.errors = io.StringIO()

    def get_stderr(self):
        return self.errors

    def handle(self):
        super().handle()
        traceback = self.errors.getvalue().splitlines()
        if traceback:
            self.server.failed(self.client_address, traceback[-1])

    def log_message(self, format, *args):
        pass  # a scrape is no news, nor is a bad request


def _unavailable(measure):
    state = measure.outage
    return 1 if state is not None and state.since is not None else 0


def _netloc(host, port):
    return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'
