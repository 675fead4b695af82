import logging

import zope.component.hooks
import zope.security.management

import gocept.runner


log = logging.getLogger(__name__)


def database_root():
    """The root of the database, where the worker keeps its count."""
    return zope.component.hooks.getSite()._p_jar.root()


@gocept.runner.appmain(ticks=0.1)
def count():
    """Count in the database; stop at every third count."""
    root = database_root()
    root['count'] = root.get('count', 0) + 1
    log.info('count is %s', root['count'])
    if root['count'] % 3 == 0:
        return gocept.runner.Exit


@gocept.runner.once(principal='mypkg.reporter')
def report():
    """Report the count."""
    interaction = zope.security.management.getInteraction()
    principal = interaction.participations[0].principal
    log.warning('%s: the count is %s', principal.title,
                database_root().get('count'))
