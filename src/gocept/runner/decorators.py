"""The decorators that turn a worker function into a runner."""

import functools

import zope.component.interfaces

from gocept.runner import environment
from gocept.runner.config import ConfigurationError
from gocept.runner.runner import MainLoop


def appmain(ticks=1, principal=None, **options):
    """Decorate a worker to run in a main loop, once every `ticks` seconds.

    The decorated function is called as ``worker(site_name, zope_conf)``:
    `site_name` names the item of the root folder to use as site (None for
    the root folder itself), `zope_conf` is the path of the zope.conf to set
    up.  See MainLoop for what happens then, and for the `options`
    (`max_ticks`, `max_runtime`, `max_memory`, `heartbeat`).
    """
    return _decorator(ticks, principal, once=False, **options)


def once(principal=None, **options):
    """Decorate a worker to run exactly one tick, e.g. as a cron job."""
    return _decorator(0, principal, once=True, **options)


def _decorator(ticks, principal, once, **options):
    def decorate(worker):
        @functools.wraps(worker)
        def run(site_name, zope_conf):
            main(worker, site_name, zope_conf, ticks, principal, once,
                 **options)
        return run
    return decorate


def main(worker, site_name, zope_conf, ticks=1, principal=None, once=False,
         **options):
    """Set up the environment of `zope_conf` and run `worker` in a MainLoop.

    `options` are passed on to MainLoop.  Returns the finished MainLoop.  A
    missing `site_name` raises KeyError, one that is not a site
    ConfigurationError.
    """
    with environment.application(zope_conf) as root_folder:
        site = root_folder if site_name is None else root_folder[site_name]
        if not zope.component.interfaces.ISite.providedBy(site):
            raise ConfigurationError(
                f'{site_name!r} is not a site: it has no site manager')
        loop = MainLoop(site, ticks, worker, principal, once, **options)
        loop.run()
    return loop
