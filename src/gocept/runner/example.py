"""An example runner: it counts its ticks in the database."""

import logging
import os.path

import zope.component.hooks

import gocept.runner
import gocept.runner.arguments


log = logging.getLogger(__name__)

CONFIG = os.path.join(os.path.dirname(__file__), 'example.conf')
greeting = gocept.runner.from_config('example', 'greeting')


def count_tick():
    """Count one tick in the database and log it; return the count."""
    root = zope.component.hooks.getSite()._p_jar.root()
    ticks = root['gocept.runner.example'] = (
        root.get('gocept.runner.example', 0) + 1)
    log.info('%s: tick %s', greeting(), ticks)
    return ticks


@gocept.runner.appmain(ticks=0.5)
def count():
    """Count ticks in the database; stop after every fifth."""
    if count_tick() % 5 == 0:
        return gocept.runner.Exit


@gocept.runner.appmain(ticks=0.5)
def count_on():
    """Count ticks in the database until the program is stopped.

    The example runner for a process supervisor: bin/example-daemon.
    """
    count_tick()


def main():
    """``runexample``: run count() as a program, with the bundled
    example.conf unless -C/--config or $GOCEPT_RUNNER_CONFIG name another."""
    os.environ.setdefault(gocept.runner.arguments.CONFIG_VARIABLE, CONFIG)
    count()
