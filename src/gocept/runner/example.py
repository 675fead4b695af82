"""An example runner: it counts its ticks in the database."""

import logging
import os.path

import zope.component.hooks

import gocept.runner
import gocept.runner.cli


log = logging.getLogger(__name__)

CONFIG = os.path.join(os.path.dirname(__file__), 'example.conf')
greeting = gocept.runner.from_config('example', 'greeting')


@gocept.runner.appmain(ticks=0.5)
def count():
    """Count ticks in the database; stop after every fifth."""
    root = zope.component.hooks.getSite()._p_jar.root()
    ticks = root['gocept.runner.example'] = (
        root.get('gocept.runner.example', 0) + 1)
    log.info('%s: tick %s', greeting(), ticks)
    if ticks % 5 == 0:
        return gocept.runner.Exit


def main():
    """``runexample``: run count() as a program, with the bundled
    example.conf unless -C/--config or $GOCEPT_RUNNER_CONFIG name another."""
    os.environ.setdefault(gocept.runner.cli.CONFIG_VARIABLE, CONFIG)
    count()
