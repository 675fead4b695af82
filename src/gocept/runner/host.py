"""One process, many workers: each worker's main loop in a thread of its own.

The imports, the site ZCML and the databases are set up once, for all
workers (see gocept.runner.environment.application).  Each worker then runs
its MainLoop in a thread of its own, with its own database connection, and
so with its own transaction manager, site and security interaction (those of
``transaction``, ``zope.component.hooks`` and ``zope.security`` are per
thread).  What belongs to the process belongs to the host:

- Signals.  SIGTERM, SIGHUP and SIGINT stop every worker after its running
  tick has committed (SIGINT does not cut a worker short here: only the main
  thread could be interrupted, and it runs none); SIGUSR2 reopens the log
  files.
- systemd and the heartbeat.  READY=1 once every worker's loop runs;
  WATCHDOG=1 and the heartbeat file each time that every running worker has
  ended a tick since the last time, so a worker that hangs stops them.
- `max_runtime` and `max_memory`: reaching one stops every worker
  (`max_ticks` is a worker's own).
- Metrics (`metrics`, `metrics_file`): one server or file for the process,
  with every worker's figures under its label ``worker`` (see
  gocept.runner.metrics).

A worker whose loop fails (an error outside its ticks, which the loop does
not catch: a middleware's, say) is logged and started again after a pause
that doubles from RESTART_PAUSE to MAX_RESTART_PAUSE; the others go on.  A
worker that is done (it returned Exit, raised SystemExit, ran its one tick)
ends its thread; the host ends when every worker has.
"""

import contextlib
import logging
import threading
import time

import transaction
import ZConfig.components.logger.loghandler
import zope.component.hooks
import zope.security.management

from gocept.runner import environment
from gocept.runner import limits
from gocept.runner import lock
from gocept.runner import signals
from gocept.runner.config import ConfigurationError
from gocept.runner.health import Heartbeat
from gocept.runner.health import SystemdNotify
from gocept.runner.limits import resident_memory
from gocept.runner.middleware import Middleware
from gocept.runner.runner import MainLoop
from gocept.runner.runner import lookup_principal
from gocept.runner.wakeup import Wakeup


log = logging.getLogger(__name__)

#: Seconds before a failed worker starts again, the first time.
RESTART_PAUSE = 1
#: The longest pause before a failed worker starts again (seconds).
MAX_RESTART_PAUSE = 60

# How often the host looks at max_memory (seconds); at max_runtime, too,
# and once more when it is up.
CHECK_INTERVAL = 1


class Worker:
    """A worker function and how the host runs it.

    A function decorated with appmain or once brings its decorator's
    settings (``ticks``, ``once``, ``principal``, ``lock_file``, the options
    of MainLoop, and the defaults of its own ``arguments``); `settings`
    replace them.  `site_name` names the item of the root folder that is the
    worker's site (None: the root folder).
    """

    def __init__(self, function, site_name=None, **settings):
        decorator = getattr(function, 'decorator', None)
        self.settings = {'ticks': 1}
        if decorator is not None:
            self.settings.update(
                decorator.options, ticks=decorator.ticks,
                once=decorator.once, principal=decorator.principal,
                lock_file=decorator.lock_file)
            function = decorator.bind(function.__wrapped__)
        self.settings.update(settings)
        self.function = function
        try:
            limits.check(self.settings)
        except ConfigurationError as e:
            raise ConfigurationError(f'Worker {self.name}: {e}') from None
        self.site_name = site_name
        self.loop = None
        # The worker's gocept.runner.metrics.Measure, if the host has metrics.
        self.measure = None
        self.failures = 0

    @property
    def name(self):
        return getattr(self.function, '__qualname__', repr(self.function))

    def loop_options(self):
        """The settings that are the MainLoop's."""
        options = dict(self.settings)
        # The host holds the lock files; a decorated worker's own metrics
        # are a single runner's (the host has its own).
        for name in ('lock_file', 'metrics', 'metrics_file'):
            options.pop(name, None)
        return options

    def __repr__(self):
        return f'<Worker {self.name}>'


class Host:
    """Runs `workers` (Worker objects, or functions) in one process.

    `max_runtime`, `max_memory` (see gocept.runner.limits) and `heartbeat`
    (see gocept.runner.health) are the process's, and so are `metrics`
    ([HOST:]PORT to serve Prometheus metrics on) and `metrics_file` (a file
    to write them to at the end), which need the metrics extra (see
    gocept.runner.metrics).  After `run`,
    `stopped_because` is None if every worker ended by itself, else 'signal'
    (`signal` has which) or the limit reached; each Worker's `loop` is its
    last MainLoop.
    """

    def __init__(self, workers, max_runtime=None, max_memory=None,
                 heartbeat=None, metrics=None, metrics_file=None):
        self.workers = [w if isinstance(w, Worker) else Worker(w)
                        for w in workers]
        if not self.workers:
            raise ConfigurationError('No workers to run')
        limits.check(dict(max_runtime=max_runtime, max_memory=max_memory))
        self.max_runtime = max_runtime
        self.max_memory = max_memory
        self.heartbeat = None if heartbeat is None else Heartbeat(heartbeat)
        self.notify = SystemdNotify()
        self.metrics = None
        if metrics is not None or metrics_file is not None:
            # Imported here: prometheus_client would slow every start-up.
            from gocept.runner.metrics import Exporter
            self.metrics = Exporter(metrics, metrics_file)
            for worker in self.workers:
                worker.measure = self.metrics.measure(worker.function)
        self.stopped_because = None
        self.signal = None
        self.running = False
        self._lock = threading.Lock()
        # The loops running; the workers whose thread has not ended, those
        # that ended a tick since the last report, those whose loop started.
        self._looping = set()
        self._active = set(self.workers)
        self._ticked = set()
        self._started = set()
        self._stopping = threading.Event()
        self._signal_to_log = None
        self._reopen = False
        self._wakeup = Wakeup()

    def run(self, zope_conf):
        """Set up `zope_conf` once and run every worker until all have ended
        or the host is stopped; return self."""
        self.running = True
        self._wakeup.open()
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(signals.handled(self))
                for worker in self.workers:
                    if worker.settings.get('lock_file'):
                        stack.enter_context(
                            lock.locked(worker.settings['lock_file']))
                if self.metrics is not None:
                    stack.enter_context(self.metrics)
                root = stack.enter_context(
                    environment.application(zope_conf))
                self._prepare(root)
                if self.metrics is not None:
                    self.metrics.serve()
                self._run(root._p_jar.db())
        finally:
            self.running = False
            self._wakeup.close()
        return self

    def _prepare(self, root):
        # Mistakes of the configuration end the run before any worker runs.
        for worker in self.workers:
            settings = worker.settings
            principal = settings.get('principal')
            if callable(principal):
                settings['principal'] = principal = principal()
            if principal is not None:
                lookup_principal(principal)
            site = _site(root, worker.site_name)
            try:
                # The loop checks its options (ticks, say) as it is made.
                MainLoop(site, worker=worker.function,
                         **worker.loop_options())
            except TypeError as e:
                raise ConfigurationError(
                    f'Worker {worker.name}: {e}') from None
        if self.heartbeat is not None:
            self.heartbeat.before_loop(self)

    def _run(self, db):
        # A connection for every worker, and the one of the main thread,
        # without ZODB's warning about a pool too small.
        db.setPoolSize(max(db.getPoolSize(), len(self.workers) + 1))
        threads = []
        for worker in self.workers:
            thread = threading.Thread(
                target=self._work, args=(worker, db),
                name=f'gocept.runner {worker.name}')
            thread.start()
            threads.append(thread)
        started = time.monotonic()
        try:
            while self._working():
                self._wakeup.sleep(self._until_next_check(started))
                self._log_signal()
                if self._reopen:
                    self._reopen = False
                    ZConfig.components.logger.loghandler.reopenFiles()
                    log.debug('Log files reopened')
                self._check_limits(started)
        finally:
            if self._working():
                self.stop('stop')  # the host itself failed
            for thread in threads:
                thread.join()
            self._log_signal()
            self.notify.after_loop(self)

    def _working(self):
        # Whether a worker's thread has not ended.  Not Thread.is_alive(): a
        # thread is alive a moment longer than it takes to wake the main
        # thread, which would then sleep its CHECK_INTERVAL once more.
        with self._lock:
            return bool(self._active)

    def _work(self, worker, db):
        """The body of a worker's thread."""
        try:
            self._run_worker(worker, db)
        finally:
            with self._lock:
                self._active.discard(worker)
                self._ticked.discard(worker)
            # The host ends with its last worker, whatever ended them.
            self._wakeup.wake()

    def _run_worker(self, worker, db):
        """Run `worker`'s loop, and again after it failed, until it is done
        or the host stops."""
        pause = RESTART_PAUSE
        while not self._stopping.is_set():
            connection = db.open()
            try:
                root = connection.root()[environment.ROOT_FOLDER_NAME]
                options = worker.loop_options()
                middleware = [*options.pop('middleware', ()),
                              _Link(self, worker)]
                if worker.measure is not None:
                    middleware.append(worker.measure)
                loop = MainLoop(_site(root, worker.site_name),
                                worker=worker.function, middleware=middleware,
                                **options)
                # The host tells systemd how the process is doing.
                loop.middleware = [m for m in loop.middleware
                                   if not isinstance(m, SystemdNotify)]
                worker.loop = loop
                loop()
                break
            except Exception:
                worker.failures += 1
                log.exception('Worker %s failed; starting it again in %s'
                              ' seconds', worker.name, pause)
            finally:
                _clean_up(connection)
            self._stopping.wait(pause)
            pause = min(pause * 2, MAX_RESTART_PAUSE)

    def _until_next_check(self, started):
        # Seconds until the next look at the limits: CHECK_INTERVAL, or
        # less when max_runtime ends sooner.
        if self.max_runtime is None or self.stopped_because is not None:
            return CHECK_INTERVAL
        remaining = started + self.max_runtime - time.monotonic()
        return max(0, min(remaining, CHECK_INTERVAL))

    def _check_limits(self, started):
        if (self.max_runtime is not None and
                time.monotonic() - started >= self.max_runtime):
            reason, value = 'max_runtime', self.max_runtime
        elif (self.max_memory is not None and
                resident_memory() >= self.max_memory):
            reason, value = 'max_memory', resident_memory()
        else:
            return
        if self.stopped_because is None:
            log.info('Host reached %s (%s), stopping.', reason, value)
            self.stop(reason)

    def stop(self, reason='stop'):
        """Stop every worker after its running tick."""
        with self._lock:
            if self.stopped_because is None:
                self.stopped_because = reason
            self._stopping.set()
            loops = list(self._looping)
        for loop in loops:
            loop.stop(self.stopped_because)
        self._wakeup.wake()

    # What gocept.runner.signals calls.

    def stopMainLoop(self, signum, frame):
        """Stop every worker as the signal `signum` does (a handler)."""
        self.signal = self._signal_to_log = signum
        for worker in self.workers:
            if worker.loop is not None:
                worker.loop.signal = signum
        self.stop('signal')

    def reopen_logs(self):
        """Reopen the log files (soon, in the main thread)."""
        self._reopen = True
        self._wakeup.wake()

    def _log_signal(self):
        # Not in the handler: it may interrupt a write to the log's stream.
        if self._signal_to_log is not None:
            log.info('Received signal %s, terminating.', self._signal_to_log)
            self._signal_to_log = None

    # What the workers' loops tell the host (see _Link).

    def _loop_started(self, worker, loop):
        with self._lock:
            self._looping.add(loop)
            stopping = self.stopped_because
            if len(self._started) < len(self.workers):
                self._started.add(worker)
                if len(self._started) == len(self.workers):
                    self.notify.before_loop(self)
        if stopping is not None:
            loop.signal = self.signal
            loop.stop(stopping)

    def _ticked_by(self, worker):
        # Healthy: every worker that has not ended ticked since the last
        # report (one failing or restarting does not tick).
        if self.heartbeat is None and self.notify.notify.address is None:
            return  # nobody to report to: no lock for every tick
        with self._lock:
            self._ticked.add(worker)
            if self._ticked >= self._active:
                self._ticked.clear()
                self.notify.after_tick(self, None)
                if self.heartbeat is not None:
                    self.heartbeat.after_tick(self, None)

    def _loop_ended(self, loop):
        with self._lock:
            self._looping.discard(loop)


class _Link(Middleware):
    """Tells the host about `worker`'s loop; stops it with the host."""

    def __init__(self, host, worker):
        self.host = host
        self.worker = worker

    def before_loop(self, loop):
        self.host._loop_started(self.worker, loop)

    def after_tick(self, loop, tick):
        self.host._ticked_by(self.worker)

    def after_loop(self, loop):
        self.host._loop_ended(loop)


def _site(root, site_name):
    if site_name is None:
        return root
    try:
        site = root[site_name]
    except KeyError:
        raise environment.UnknownSite(
            f'Unknown site {site_name!r}: the root folder has no item of'
            ' that name') from None
    return environment.check_site(site, site_name)


def _clean_up(connection):
    """Leave the thread as it was before the worker: no transaction, site
    or interaction; the connection closed."""
    try:
        transaction.abort()
    except Exception:
        log.debug('Cannot abort at the end of a worker', exc_info=True)
    zope.component.hooks.setSite(None)
    zope.security.management.endInteraction()
    connection.close()
