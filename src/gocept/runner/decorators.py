"""The decorators that turn a worker function into a runner."""

import functools
from contextlib import nullcontext

from gocept.runner import environment
from gocept.runner import lock


def appmain(ticks=1, principal=None, lock_file=None, **options):
    """Decorate a worker to run in a main loop, once every `ticks` seconds.

    The decorated function is called as ``worker(site_name, zope_conf)``:
    `site_name` names the item of the root folder to use as site (None for
    the root folder itself), `zope_conf` is the path of the zope.conf to set
    up.  See environment.run for what happens then.  Called with no
    arguments (as a console script), it is a program: see
    gocept.runner.cli.  With a `lock_file`, a call holds that lock while it
    runs (see gocept.runner.lock).  The `options` (`max_ticks`, `max_runtime`,
    `max_memory`, `heartbeat`) are passed on to MainLoop.
    """
    return _decorator(lock_file, ticks=ticks, principal=principal, once=False,
                      **options)


def once(principal=None, lock_file=None, **options):
    """Decorate a worker to run exactly one tick, e.g. as a cron job."""
    return _decorator(lock_file, ticks=0, principal=principal, once=True,
                      **options)


# The decorated worker was called without this argument.
_ARGV = object()


def _decorator(lock_file, **loop_options):
    def decorate(worker):
        @functools.wraps(worker)
        def run(site_name=_ARGV, zope_conf=_ARGV):
            if site_name is _ARGV and zope_conf is _ARGV:
                # Imported here: argparse and inspect would cost the
                # start-up of every runner that is not a program.
                from gocept.runner import cli
                cli.program(worker, lock_file, **loop_options)  # exits
            if site_name is _ARGV or zope_conf is _ARGV:
                raise TypeError(
                    f'{worker.__name__}() takes site_name and zope_conf, or'
                    ' no arguments to run as a program')
            with lock.locked(lock_file) if lock_file else nullcontext():
                environment.run(worker, site_name, zope_conf, **loop_options)
        return run
    return decorate
