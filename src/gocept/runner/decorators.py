"""The decorators that turn a worker function into a runner."""

import contextlib
import functools

from gocept.runner import assembly
from gocept.runner import environment
from gocept.runner import limits
from gocept.runner import programs
from gocept.runner.arguments import parse_arguments


# The decorated worker was called without this argument.
_ARGV = object()


class appmain:
    """Decorate a worker to run in a main loop, once every `ticks` seconds.

    The decorated function is called as ``worker(appname, configfile)``:
    `appname` names the item of the root folder to use as site (None for the
    root folder itself), `configfile` is the path of the zope.conf to set up
    (see `application`).  Called with no arguments (as a console script),
    it is a program: see gocept.runner.programs.  With a `principal` (an id,
    or a callable returning one, such as from_config's) every tick runs as
    that principal.  With a `lock_file`, a call holds that lock while it runs
    (see gocept.runner.lock).  The `options` (`max_ticks`, `max_runtime`,
    `max_memory`, `heartbeat`, `middleware`) are passed on to MainLoop;
    `metrics` ([HOST:]PORT to serve Prometheus metrics on) and
    `metrics_file` (a file to write them to at the end) add
    gocept.runner.metrics.

    `arguments`, a function, declares the worker's own command line: it is
    called with an argparse argument group to add them to, and the worker
    is called with the Namespace of their values instead of no arguments
    (the defaults when it is called with appname and configfile).  The
    decorated function has this decorator as its attribute `decorator`.
    """

    once = False

    def __init__(self, ticks=1, principal=None, lock_file=None,
                 arguments=None, **options):
        self.ticks = ticks
        self.principal = principal
        self.lock_file = lock_file
        self.arguments = arguments
        self.options = options

    def get_principal(self):
        """The id of the principal to run as (None for none)."""
        if callable(self.principal):
            return self.principal()
        return self.principal

    @contextlib.contextmanager
    def application(self, appname, configfile):
        """Set the application up; yield the site the loop works on.

        Override this to set the application up another way.  The default
        reads zope.conf (see gocept.runner.environment.application) and
        yields the root folder, or its item `appname`, which must be a site.
        Whatever it set up is torn down when the block ends.
        """
        with environment.init(appname, configfile) as site:
            yield environment.check_site(site, appname)

    def __call__(self, worker):
        @functools.wraps(worker)
        def run(appname=_ARGV, configfile=_ARGV, *, site_name=_ARGV,
                zope_conf=_ARGV):
            # site_name and zope_conf: the names of gocept.runner 4.0a.
            appname = site_name if appname is _ARGV else appname
            configfile = zope_conf if configfile is _ARGV else configfile
            if appname is _ARGV and configfile is _ARGV:
                programs.program(self, worker)  # exits
            if appname is _ARGV or configfile is _ARGV:
                raise TypeError(
                    f'{worker.__name__}() takes appname and configfile, or'
                    ' no arguments to run as a program')
            self.run(worker, appname, configfile)
        run.decorator = self
        return run

    def bind(self, worker, arguments=None):
        """What the loop calls: `worker` itself, or, if the decorator
        declares `arguments`, `worker` called with the Namespace of their
        values (`arguments`, else their defaults)."""
        if self.arguments is None:
            return worker
        if arguments is None:
            arguments = parse_arguments(self.arguments, [])
        return _called_with(worker, arguments)

    def settings(self):
        """The settings of the decorated worker's run."""
        return dict(self.options, ticks=self.ticks, once=self.once,
                    principal=self.principal, lock_file=self.lock_file)

    def run(self, worker, appname, configfile, arguments=None, **overrides):
        """Run `worker` in a MainLoop on the site of `configfile`; return
        the loop when it has ended.

        `arguments`: the Namespace of the worker's own arguments, if the
        decorator declares them (None: their defaults).  `overrides` replace
        the decorator's settings (``lock_file``, ``ticks``, ``once``,
        ``principal`` and the options).
        """
        settings = dict(self.settings(), **overrides)
        limits.check(settings)
        worker = assembly.Worker(self.bind(worker, arguments), **settings)
        if 'principal' not in overrides:
            # Asked when the loop is made: from_config's reads the
            # zope.conf just loaded.
            worker.settings['principal'] = self.get_principal
        process = assembly.run(
            [worker], self.application(appname, configfile))
        return process.loops[0]


class once(appmain):
    """Decorate a worker to run exactly one tick, e.g. as a cron job."""

    once = True

    def __init__(self, principal=None, lock_file=None, arguments=None,
                 **options):
        super().__init__(principal=principal, lock_file=lock_file,
                         arguments=arguments, **options)


def _called_with(worker, arguments):
    """`worker`, called with `arguments` (under its own name)."""
    @functools.wraps(worker)
    def call():
        return worker(arguments)
    return call
