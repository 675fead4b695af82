"""Preparing the Zope environment a worker runs in."""

import contextlib
import importlib
import logging
import os
import sys

import transaction
import transaction.interfaces
import zc.lockfile
import ZODB.interfaces
import zope.app.appsetup.appsetup
import zope.component
import zope.component.hooks
import zope.component.interfaces
import zope.configuration.exceptions
import zope.event
import zope.processlifetime
import zope.security.management
from ZODB.POSException import ConflictError

from gocept.runner import config
from gocept.runner import filestorage
from gocept.runner import lock
from gocept.runner import outage
from gocept.runner import retry
from gocept.runner.interfaces import UnknownSite


log = logging.getLogger(__name__)

ROOT_FOLDER_NAME = 'Application'

# How often to try opening a database that others are creating at once.
OPEN_ATTEMPTS = 10


@contextlib.contextmanager
def application(zope_conf):
    """Set up everything `zope_conf` describes; yield the root folder.

    Configures sys.path, logging, product configuration and the site ZCML
    (with the ``devmode`` feature if zope.conf has ``devmode on``), opens the
    databases (notifying DatabaseOpened, so that a new database gets its root
    folder) and a connection.  Connection and databases are closed on the
    way out, whatever happened.

    The zope.conf of a Zope 4+ instance (see config.is_instance_conf) is
    gocept.runner.zopeapp's instead: it yields the OFS application.
    """
    if config.is_instance_conf(zope_conf):
        with import_zopeapp(zope_conf).application(zope_conf) as root:
            yield root
        return
    # A worker's forked child that ends with an exception passes through
    # here: it must not close what the parent still uses.
    pid = os.getpid()
    conf = config.load(zope_conf)
    config.configure_path(conf)
    config.configure_logging(conf)
    config.ignore_server_settings(conf)
    config.configure_products(conf)
    config.configure_schedules(conf)
    config.configure_sentry(conf)
    load_zcml(conf.site_definition, config.zcml_features(conf))
    databases = open_databases(conf.databases)
    try:
        db = databases[0]
        bootstrap(db)
        connection = db.open()
        try:
            yield root_folder(connection, conf.site_definition)
        finally:
            if os.getpid() == pid:
                _abort_at_the_end()
                # A site of this database left current (by a 3.x loop that
                # raised, say) would serve the events of closing the
                # databases from a closed connection.
                site = zope.component.hooks.getSite()
                if getattr(site, '_p_jar', None) is connection:
                    zope.component.hooks.setSite(None)
                connection.close()
    finally:
        if os.getpid() == pid:
            close(databases)


def bootstrap(db):
    """Notify DatabaseOpened for `db`, so that its subscribers create what
    a new database lacks (zope.app.appsetup's create the root folder).

    Runners started at once on a new database race to create it.  A loser's
    commit conflicts; and the subscribers (zope.app.appsetup's, a site's
    own) are not written for the race: one of them may find the root folder
    gone again in a connection of its own, and fail on None.  So on a
    database that had no root folder when we looked, whatever the
    subscribers raise is tried again, up to OPEN_ATTEMPTS times; on a
    database that has one, only a conflict (a TransientError).  A child
    that a subscriber forked never tries again: its error is its own.
    """
    pid = os.getpid()
    connection = db.open()
    try:
        new = ROOT_FOLDER_NAME not in connection.root()
    finally:
        transaction.abort()
        connection.close()
    retryable = Exception if new else transaction.interfaces.TransientError

    def notify():
        try:
            zope.event.notify(zope.processlifetime.DatabaseOpened(db))
            transaction.commit()
        except Exception:
            if os.getpid() == pid:
                transaction.abort()
            raise
    retry.call(notify, OPEN_ATTEMPTS,
               lambda e: os.getpid() == pid and isinstance(e, retryable),
               _pauses())


def _pauses():
    # Between two attempts of processes racing to create a database.
    return retry.Backoff(0.05, 1, jitter=True)


def _abort_at_the_end():
    try:
        transaction.abort()
    except Exception as e:
        # The abort starts a new transaction, which a RelStorage syncs with
        # its database: a stop during an outage must not fail on that.
        if not outage.unavailable(e):
            raise
        log.debug('The storage is unavailable at the end: %s', e)


@contextlib.contextmanager
def init(appname, configfile):
    """Set up `configfile` (a zope.conf); yield the root folder, or its item
    `appname` if that is not None.

    The context manager of gocept.runner 3.x, there as
    ``gocept.runner.runner.init``.  Raises UnknownSite if there is no item
    `appname`.
    """
    with application(configfile) as root:
        if appname is None:
            yield root
            return
        zopeapp = zope_stack(root)
        if zopeapp is not None:
            yield zopeapp.find_site(root, appname)
            return
        try:
            item = root[appname]
        except KeyError:
            raise UnknownSite(
                f'Unknown site {appname!r}: the root folder has no item of'
                ' that name') from None
        yield item


def import_zopeapp(zope_conf):
    """gocept.runner.zopeapp, for the Zope 4+ instance of `zope_conf`;
    ConfigurationError if Zope is not installed."""
    # Imported when needed: Zope is an optional extra, and importing it
    # would slow down the start of every runner on the Zope 3 stack.
    try:
        from gocept.runner import zopeapp
    except ImportError as e:
        raise config.ConfigurationError(
            f'{zope_conf} is the zope.conf of a Zope 4+ instance, but Zope'
            f' is not installed (install gocept.runner[zope]): {e}') from None
    return zopeapp


def zope_loaded():
    """gocept.runner.zopeapp if this process has imported Zope (it runs a
    Zope 4+ instance, or code of one), else None."""
    # Only such a process can have Zope's objects, and importing the
    # module then costs little: Zope's packages are imported already.
    if 'OFS.interfaces' not in sys.modules:
        return None
    return importlib.import_module('gocept.runner.zopeapp')


def zope_stack(obj):
    """gocept.runner.zopeapp if `obj` is an object of a Zope 4+ instance,
    else None (an object of the Zope 3 stack)."""
    zopeapp = zope_loaded()
    if zopeapp is not None and zopeapp.is_zope_object(obj):
        return zopeapp
    return None


def check_site(site, site_name):
    """Return `site` if it is a site; raise ConfigurationError if not.

    Any object of a Zope 4+ instance will do: its loop makes the nearest
    component site the site (see gocept.runner.zopeapp).
    """
    if zope_stack(site) is not None:
        return site
    if not zope.component.interfaces.ISite.providedBy(site):
        raise config.ConfigurationError(
            f'{site_name!r} is not a site: it has no site manager')
    return site


# The site ZCML this module loaded and its features.
_loaded_zcml = None


def load_zcml(site_definition, features=()):
    """Execute the site ZCML with the ZCML `features`, once per process.

    zope.app.appsetup keeps the global component registry of the first call;
    asking for another file or other features later would silently use the
    wrong one.
    """
    global _loaded_zcml
    features = tuple(sorted(features))
    loaded = zope.app.appsetup.appsetup.getConfigSource()
    if loaded is not None:
        if loaded != site_definition:
            raise config.ConfigurationError(
                f'This process has loaded the site ZCML {loaded}; it cannot'
                f' load {site_definition} as well')
        if _loaded_zcml is not None and _loaded_zcml[0] == loaded:
            if _loaded_zcml[1] != features:
                raise config.ConfigurationError(
                    f'This process has loaded the site ZCML {loaded} with the'
                    f' features {_features(_loaded_zcml[1])}; it cannot load'
                    f' it with {_features(features)} as well')
        return
    if features:
        log.debug('Loading the site ZCML %s with the features %s',
                  site_definition, _features(features))
    try:
        zope.app.appsetup.appsetup.config(site_definition, features=features)
    except zope.configuration.exceptions.ConfigurationError as e:
        _reset_zcml()
        raise config.ConfigurationError(
            f'Error in the site ZCML: {config.zcml_error(e)}') from e
    except OSError as e:
        _reset_zcml()
        raise config.ConfigurationError(
            f'Cannot read the site ZCML {site_definition} (zope.conf\'s'
            f' site-definition): {e.strerror}') from e
    _loaded_zcml = (site_definition, features)


def _features(features):
    return ', '.join(features) or 'none'


def _reset_zcml():
    zope.app.appsetup.appsetup.reset()
    # appsetup.config() runs the ZCML in an interaction it leaves open when
    # the ZCML fails.
    zope.security.management.endInteraction()


def open_databases(factories):
    """Open the ``<zodb>`` sections as one multi-database; return the list.

    The first is the main database.  Each is registered as an IDatabase
    utility under its name.  If one cannot be opened, those already open are
    closed again and ConfigurationError names the failing one.
    """
    databases = []
    by_name = {}
    try:
        for factory in factories:
            name = factory.name or ''
            if name in by_name:
                raise config.ConfigurationError(
                    f'Two <zodb> sections are named {name!r}')
            try:
                db = open_database(factory)
            except config.ConfigurationError as e:
                # A damaged FileStorage (gocept.runner.filestorage), whose
                # message names the file.
                raise config.ConfigurationError(
                    f'Cannot open {_database(name)}: {e}') from e
            except zc.lockfile.LockError as e:
                raise _locked(name, factory, e) from e
            except Exception as e:
                raise config.ConfigurationError(
                    f'Cannot open {_describe(name, factory)}:'
                    f' {config.reason(e)}') from e
            db.databases = by_name
            db.database_name = name
            by_name[name] = db
            databases.append(db)
            zope.component.provideUtility(db, ZODB.interfaces.IDatabase, name)
    except BaseException:
        close(databases)
        raise
    return databases


def _database(name):
    return f'the database {name!r}' if name else 'the database'


def _describe(name, factory):
    """The database `name` and its storage, for a message."""
    database = _database(name)
    if factory.config.storage is None:
        return database
    section = factory.config.storage.config
    while getattr(section, 'base', None) is not None:
        # A <blobstorage>: what it wraps tells where the data is.
        section = section.base.config
    servers = getattr(section, 'server', None)
    if servers:
        addresses = ', '.join(_address(server.address) for server in servers)
        return f'{database} (ZEO server {addresses})'
    path = getattr(section, 'path', None)
    if path:
        return f'{database} ({path})'
    return database


def _address(address):
    if isinstance(address, tuple):
        host, port = address[:2]
        return f'{host}:{port}'
    return str(address)


def _locked(name, factory, error):
    """The exception for a storage whose lock file is held."""
    what = _describe(name, factory)
    path = getattr(factory.config.storage.config, 'path', None)
    if path is None:
        return lock.AlreadyRunning(
            f'Cannot open {what}: {error} (another process has it open)')
    path += '.lock'
    holder = lock.holder_of(path)
    if holder == str(os.getpid()):
        return config.ConfigurationError(
            f'Cannot open {what}: this process holds its lock file {path}'
            ' already (--lock-file or a second <zodb> section naming it?)')
    return lock.AlreadyRunning(
        f'Cannot open {what}: another process (pid {holder}) has it open,'
        f' holding its lock file {path}')


# The SQLSTATEs with which PostgreSQL refuses to create what another process
# has just created: a unique violation (in its catalog, too), a table, object
# or function that exists, a deadlock, "tuple concurrently updated".
CREATED_AT_ONCE = ('23505', '42P07', '42710', '42723', '40P01', 'XX000')


def open_database(factory):
    """Open the database of a ``<zodb>`` section.

    A FileStorage is checked before it is opened and guarded once it is
    (see gocept.runner.filestorage).
    """
    filestorage.check_section(factory)
    # Processes opening a new database at once race to create its root
    # object, and a RelStorage its tables; the losers find them created when
    # they try again.  (Not transaction's attempts(): it would retry a
    # missing ZEO server, too.)
    db = retry.call(factory.open, OPEN_ATTEMPTS, _created_at_once, _pauses())
    filestorage.guard(db.storage)
    return db


def _created_at_once(error):
    return isinstance(error, ConflictError) or getattr(
        error, 'pgcode', None) in CREATED_AT_ONCE


def root_folder(connection, site_definition):
    """The root folder of the database `connection` belongs to."""
    try:
        return connection.root()[ROOT_FOLDER_NAME]
    except KeyError:
        raise config.ConfigurationError(
            f'The database has no root folder {ROOT_FOLDER_NAME!r}: the site'
            f' ZCML {site_definition} must include zope.app.appsetup, whose'
            ' bootStrapSubscriber creates it') from None


def close(databases):
    """Close `databases` and remove their IDatabase utilities."""
    registry = zope.component.getGlobalSiteManager()
    for db in databases:
        registry.unregisterUtility(
            db, ZODB.interfaces.IDatabase, db.database_name)
        db.close()
