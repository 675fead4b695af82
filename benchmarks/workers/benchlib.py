"""What the benchmark workers share.

A worker reports to the harness by printing JSON objects, one a line, on
stdout.  Times are ``time.monotonic()``, which on Linux is one clock for all
processes, so the harness can subtract the moment it started the process.
The database (a copy of the template `prepare.py` made) holds, in its root
mapping, ``bench`` (a PersistentMapping with the counter ``n``), ``items``
and ``objects`` (empty OOBTrees).
"""

import json
import os
import time


now = time.monotonic


def report(**values):
    """Tell the harness `values`."""
    print(json.dumps(values), flush=True)


def rss_kb(field='VmRSS'):
    """The resident set size (or another /proc/self/status field) in kB."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise LookupError(field)


def db_root():
    """The root mapping of the database the running tick works on."""
    import zope.component.hooks
    return zope.component.hooks.getSite()._p_jar.root()


def open_floor(zope_conf):
    """The hand-written minimum every runner on this stack does: read
    `zope_conf` with zope.app.appsetup's schema, load the site ZCML, open the
    database and notify DatabaseOpened.  No logging set-up, no runner.
    """
    import ZConfig
    import zope.app.appsetup
    import zope.app.appsetup.appsetup
    import zope.event
    import zope.processlifetime
    schema = ZConfig.loadSchema(os.path.join(
        os.path.dirname(zope.app.appsetup.__file__), 'schema', 'schema.xml'))
    conf, _ = ZConfig.loadConfig(schema, zope_conf)
    zope.app.appsetup.appsetup.config(conf.site_definition)
    db = conf.databases[0].open()
    zope.event.notify(zope.processlifetime.DatabaseOpened(db))
    return db


def interaction_principal():
    """The id of the principal of the current security interaction."""
    import zope.security.management
    interaction = zope.security.management.getInteraction()
    return interaction.participations[0].principal.id


def participation_is_request():
    """Whether the tick's participation is a request, as code written for
    3.x expects (``getInteraction().participations[0]``)."""
    import zope.publisher.interfaces
    import zope.security.management
    interaction = zope.security.management.getInteraction()
    return zope.publisher.interfaces.IRequest.providedBy(
        interaction.participations[0])


OBJECTS_PER_TICK = 50
READS_PER_TICK = 200


def memory_tick(objects, tick, rnd):
    """Store OBJECTS_PER_TICK new objects in the tree `objects` and read
    READS_PER_TICK objects stored in earlier ticks, chosen by `rnd`."""
    from persistent.mapping import PersistentMapping
    first = tick * OBJECTS_PER_TICK
    for key in range(first, first + OBJECTS_PER_TICK):
        objects[key] = PersistentMapping(value=key)
    if first:
        for _ in range(READS_PER_TICK):
            key = rnd.randrange(first)
            if objects[key]['value'] != key:
                raise ValueError(f'Object {key} has a wrong value')
