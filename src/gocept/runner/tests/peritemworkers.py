"""Programs with a batch of items, run by test_peritem_conflicts.

``python -m gocept.runner.tests.peritemworkers NAME ZOPE_CONF`` runs the
batch `shared` as the runner NAME in a ``once`` loop and exits with the
status of gocept.runner.cli.exit_status.  `failing_batch` and `good_batch`
are programs (console scripts) of their own.
"""

import sys

import persistent
import zope.component.hooks

import gocept.runner
from gocept.runner import cli


ITEMS = 40


class Counter(persistent.Persistent):
    """An integer in an object of its own: no conflict resolution."""

    value = 0


@gocept.runner.transaction_per_item
def documents(broken):
    for number in range(4):
        def index(number=number):
            if number in broken:
                raise ValueError(f'document {number} is broken')
        yield f'document {number}', index


@gocept.runner.once()
def failing_batch():
    """Index four documents, of which the third fails."""
    documents({2})


@gocept.runner.once()
def good_batch():
    """Index four documents."""
    documents(())


@gocept.runner.transaction_per_item
def shared(name):
    """ITEMS items, each adding 1 to root['shared'], the generator noting
    its position in root['position']: both conflict with another runner
    doing the same."""
    root = zope.component.hooks.getSite()._p_jar.root()
    for number in range(ITEMS):
        root['position'].value = number

        def item(number=number):
            root['shared'].value += 1
            key = f'{name} {number}'
            root['done'][key] = root['done'].get(key, 0) + 1
        yield f'{name} item {number}', item


if __name__ == '__main__':
    name, zope_conf = sys.argv[1:]
    loop = gocept.runner.once().run(lambda: shared(name), None, zope_conf)
    sys.exit(cli.exit_status(loop))
