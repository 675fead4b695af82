"""Assembling a run: settings, process, application, loops, result.

The decorators, the command line and the host all run workers this way:
`run` holds the lock files, sets up metrics, sets the application up,
makes a MainLoop for each Worker, and runs them in a Process, which it
returns when every loop has ended.
"""

import contextlib
import logging

from gocept.runner import config
from gocept.runner import environment
from gocept.runner import limits
from gocept.runner import lock
from gocept.runner import process
from gocept.runner import security
from gocept.runner import signals
from gocept.runner.interfaces import ConfigurationError
from gocept.runner.runner import MainLoop


log = logging.getLogger(__name__)

# The settings that are the process's, not a loop's.
PROCESS_SETTINGS = ('lock_file', 'max_runtime', 'max_memory', 'heartbeat',
                    'metrics', 'metrics_file')


class Worker:
    """A worker function and the settings of its loop.

    A function decorated with appmain or once brings its decorator's
    settings (``ticks``, ``once``, ``principal``, ``lock_file``, its
    options, and the defaults of its own ``arguments``); `settings`
    replace them.  Those of the process (PROCESS_SETTINGS) count when the
    worker runs alone; in a process of several, its lock file is held and
    the others give way to the process's.  `site_name` names the item of
    the root folder that is the worker's site (None: the root folder, or
    the site that the application yields); on a Zope 4+ instance, the path
    of an object from the OFS application (see gocept.runner.zopeapp).
    """

    def __init__(self, function, site_name=None, **settings):
        decorator = getattr(function, 'decorator', None)
        self.settings = {'ticks': 1}
        if decorator is not None:
            self.settings.update(decorator.settings())
            function = decorator.bind(function.__wrapped__)
        self.settings.update(settings)
        self.function = function
        self.site_name = site_name
        try:
            limits.check(self.settings)
        except ConfigurationError as e:
            raise ConfigurationError(f'Worker {self.name}: {e}') from None
        # Its MainLoop, once `run` has made it; its metrics' Measure.
        self.loop = None
        self.measure = None

    @property
    def name(self):
        return getattr(self.function, '__qualname__', repr(self.function))

    def process_settings(self):
        return {name: value for name, value in self.settings.items()
                if name in PROCESS_SETTINGS and value is not None}

    def is_copy_of(self, other):
        """Whether this is a copy of the Worker `other`: the same function
        with the same settings, on the same site (as ``gocept-jobs work
        --workers N`` runs N of them)."""
        return (self.function is other.function and
                self.site_name == other.site_name and
                self.settings == other.settings)

    def make_loop(self, root, middleware=()):
        """Make the worker's MainLoop on its site in `root`, adding
        `middleware` to its own.

        Raises ConfigurationError for an unknown site or principal, or a
        setting that the loop does not take.
        """
        settings = {name: value for name, value in self.settings.items()
                    if name not in PROCESS_SETTINGS}
        principal = settings.pop('principal', None)
        if callable(principal):
            # Asked now: from_config's reads the zope.conf just loaded.
            principal = principal()
        zopeapp = environment.zope_stack(root)
        if zopeapp is None:
            security.lookup_principal(principal)
            loop_class, app = MainLoop, site(root, self.site_name)
        else:
            app = zopeapp.find_site(root, self.site_name)
            if principal is not None:
                zopeapp.find_user(app, principal)
            loop_class = zopeapp.ZopeLoop
        settings['middleware'] = [*settings.get('middleware', ()),
                                  *middleware]
        try:
            self.loop = loop_class(app, worker=self.function,
                                   principal=principal, **settings)
        except TypeError as e:
            raise ConfigurationError(f'Worker {self.name}: {e}') from None
        return self.loop

    def __repr__(self):
        return f'<Worker {self.name}>'


class Run:
    """A run of `workers` (Worker objects) in this process, assembled from
    the process's settings: a lock file held for the whole run, limits, a
    heartbeat file, metrics to serve ([HOST:]PORT) or to write to a file,
    and middleware of the process.  A single worker's own settings count
    where these are not given.

    Made, it has checked what it can without the application: `metrics`
    is the Exporter, if metrics are asked for, and each Worker's `measure`
    its Measure.  Called with the application, it runs.
    """

    def __init__(self, workers, lock_file=None, max_runtime=None,
                 max_memory=None, heartbeat=None, metrics=None,
                 metrics_file=None, middleware=()):
        self.workers = list(workers)
        if not self.workers:
            raise ConfigurationError('No workers to run')
        limits.check(dict(max_runtime=max_runtime, max_memory=max_memory))
        self.settings = _process_settings(self.workers, dict(
            max_runtime=max_runtime, max_memory=max_memory,
            heartbeat=heartbeat, metrics=metrics, metrics_file=metrics_file))
        self.lock_files = list(dict.fromkeys(filter(None, [lock_file, *(
            worker.settings.get('lock_file') for worker in self.workers)])))
        self.middleware = list(middleware)
        self.metrics = None
        for worker in self.workers:
            worker.measure = None
        if (self.settings['metrics'], self.settings['metrics_file']) != (
                None, None):
            # Imported here: it and prometheus_client take about 75 ms to
            # import, a third of what the package itself takes, which every
            # runner without metrics would pay at its start.
            from gocept.runner import metrics as metrics_
            self.metrics = metrics_.Exporter(self.settings['metrics'],
                                             self.settings['metrics_file'])
            for number, worker in enumerate(self.workers):
                original = next((other for other in self.workers[:number]
                                 if worker.is_copy_of(other)), None)
                worker.measure = self.metrics.measure(
                    worker.function,
                    copy_of=original and original.measure)

    def __call__(self, application):
        """Run the workers; return the Process when every loop has ended.

        `application` is a context manager that sets the application up
        and yields the root folder (environment.application, say), in
        which the workers find their sites by name.
        """
        with contextlib.ExitStack() as stack:
            stack.enter_context(signals.handled())
            for path in self.lock_files:
                stack.enter_context(lock.locked(path))
            if self.metrics is not None:
                # Written at the end, also when the set-up fails.
                stack.enter_context(self.metrics)
            root = stack.enter_context(application)
            reporter = _sentry_reporter()
            loops = [worker.make_loop(root, [worker.measure]
                                      if worker.measure else [])
                     for worker in self.workers]
            runner = process.Process(loops, [
                *process.middleware(self.settings['max_runtime'],
                                    self.settings['max_memory'],
                                    self.settings['heartbeat']),
                *([] if self.metrics is None else [self.metrics]),
                *([] if reporter is None else [reporter]),
                *self.middleware])
            runner.run()
        return runner


def run(workers, application, **settings):
    """Run `workers` (Worker objects) on `application` with the process's
    `settings` (see Run); return the Process when every loop has ended."""
    return Run(workers, **settings)(application)


def run_worker(function, site_name, zope_conf, **settings):
    """Run `function` alone on the site `site_name` (None: the root folder)
    of `zope_conf`; return its MainLoop when it has ended.

    `settings` are those of a Worker: the loop's and the process's.
    """
    limits.check(settings)
    process = run([Worker(function, site_name, **settings)],
                  environment.application(zope_conf))
    return process.loops[0]


def _sentry_reporter():
    """The middleware that reports to Sentry (a gocept.runner.sentry
    Reporter), if zope.conf or the environment names a DSN; else None."""
    if not config.sentry_dsn():
        return None
    try:
        # Imported here: sentry_sdk takes its time to import, which a
        # runner that does not report would pay at its start.
        from gocept.runner import sentry
    except ImportError:
        log.warning('A Sentry DSN is configured, but sentry-sdk is not'
                    ' installed (the sentry extra): nothing is reported')
        return None
    return sentry.Reporter(config.sentry())


def _process_settings(workers, given):
    """The process's settings: those `given`, else a single worker's own
    (lock files aside: the run holds every one)."""
    settings = dict(given)
    for worker in workers:
        own = worker.process_settings()
        own.pop('lock_file', None)
        if len(workers) == 1:
            for name, value in own.items():
                if settings[name] is None:
                    settings[name] = value
        elif own:
            log.warning('Worker %s: its own %s give way to the settings of'
                        ' the process it runs in with others', worker.name,
                        ', '.join(sorted(own)))
    return settings


def site(root, site_name):
    """The site of a worker: `root`, or its item `site_name`, which must be
    a site."""
    if site_name is None:
        return root
    try:
        item = root[site_name]
    except KeyError:
        raise environment.UnknownSite(
            f'Unknown site {site_name!r}: the root folder has no item of'
            ' that name') from None
    return environment.check_site(item, site_name)
