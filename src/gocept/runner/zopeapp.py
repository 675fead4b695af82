"""Runners on a Zope 4+ instance: the OFS application as the root, a site
found by its path, a request, and ticks as a Zope user.

Zope is set up from the instance's zope.conf as its own ``zconsole`` does
(products, the databases, the ZCML of the instance), once per process.
gocept.runner.environment uses this module for a zope.conf that
config.is_instance_conf() says is an instance's (and imports it only
then); it needs the ``zope`` extra.
"""

import contextlib
import os
import urllib.parse

import AccessControl.SecurityManagement
import App.config
import transaction
import zc.lockfile
import ZConfig
import Zope2
import Zope2.Startup
import Zope2.Startup.handlers
import Zope2.Startup.options
import zope.app.appsetup.product
import zope.component.hooks
import zope.configuration.exceptions
import zope.event
import zope.globalrequest
import zope.processlifetime
from Acquisition import aq_base
from Acquisition import aq_chain
from Acquisition import aq_inner
from Acquisition import aq_parent
from OFS.interfaces import ITraversable
from Testing.makerequest import makerequest
from zope.component.interfaces import ISite

from gocept.runner import config
from gocept.runner import outage
from gocept.runner.interfaces import AlreadyRunning
from gocept.runner.interfaces import ConfigurationError
from gocept.runner.interfaces import UnknownSite
from gocept.runner.runner import MainLoop


# The name of the OFS application in the root of the main database.
APPLICATION = 'Application'

# The product configuration that gives the SERVER_URL of the runners'
# requests (``<product-config gocept.runner>`` with ``server-url URL``),
# and the URL without it (that of Zope's makerequest).
PRODUCT = 'gocept.runner'
SERVER_URL_KEY = 'server-url'
DEFAULT_SERVER_URL = 'http://nohost'
# The product configuration whose lines are the schedules of the job
# workers (see gocept.runner.config.configure_product_schedules).
SCHEDULES = 'gocept.runner.schedules'

# The zope.conf this process set Zope up from; whether it shut Zope down;
# how many `application` blocks use it.
_started = None
_stopped = False
_users = 0


@contextlib.contextmanager
def application(zope_conf):
    """Set Zope up from `zope_conf` (see `start`); yield its OFS
    application in a connection of its own, wrapped in a request.

    The connection is closed on the way out, and Zope's databases too when
    no other block uses them: the process cannot set Zope up again.
    """
    global _users
    # A worker's forked child that ends with an exception passes through
    # here: it must not close what the parent still uses.
    pid = os.getpid()
    start(zope_conf)
    _users += 1
    try:
        connection = Zope2.DB.open()
        try:
            yield with_request(connection.root()[APPLICATION])
        finally:
            if os.getpid() == pid:
                _abort()
                site = zope.component.hooks.getSite()
                if getattr(site, '_p_jar', None) is connection:
                    zope.component.hooks.setSite(None)
                connection.close()
    finally:
        if os.getpid() == pid:
            _users -= 1
            if not _users:
                stop()


def _abort():
    try:
        transaction.abort()
    except Exception as e:
        # As gocept.runner.environment's: a stop during an outage of the
        # storage must not fail on the abort's new transaction.
        if not outage.unavailable(e):
            raise


def start(zope_conf):
    """Configure Zope from `zope_conf` as ``zconsole`` does: its settings,
    the products, the databases, the ZCML of the instance.

    Zope keeps all of that in globals, so a process does it once: again
    with the same file, this does nothing.  Raises ConfigurationError for
    another file, for Zope shut down already, and for what Zope finds
    wrong (zope.conf, the ZCML, a database that cannot be opened).
    """
    global _started
    path = os.path.abspath(zope_conf)
    if _stopped:
        raise ConfigurationError(
            f'Cannot set Zope up from {zope_conf}: this process has shut'
            ' Zope down already')
    if _started is not None:
        if _started != path:
            raise ConfigurationError(
                f'This process has set Zope up from {_started}; it cannot'
                f' set it up from {path} as well')
        return
    try:
        options = Zope2.Startup.options.ZopeWSGIOptions(configfile=path)()
    except ZConfig.ConfigurationError as e:
        raise config.invalid(zope_conf, e) from None
    Zope2.Startup.handlers.handleWSGIConfig(
        options.configroot, options.confighandlers)
    App.config.setConfiguration(options.configroot)
    # For gocept.runner.from_config, as on the Zope 3 stack.
    for name, values in (options.configroot.product_config or {}).items():
        zope.app.appsetup.product.setProductConfiguration(name, values)
    # Zope's zope.conf has no <schedules>: the lines of a product-config
    # name a schedule first (ZConfig makes its keys lower case).
    config.configure_product_schedules(
        (options.configroot.product_config or {}).get(SCHEDULES))
    _check_server_url(zope_conf)
    starter = Zope2.Startup.get_wsgi_starter()
    starter.setConfiguration(options.configroot)
    # What WSGIStarter.prepare() does, but for its log line "Ready to
    # handle requests": a runner handles none.
    starter.setupLocale()
    starter.setupSecurityOptions()
    starter.setupPublisher()
    _started = path
    try:
        starter.startZope()
    except zope.configuration.exceptions.ConfigurationError as e:
        raise ConfigurationError(
            f'Error in the ZCML of the instance of {zope_conf}:'
            f' {config.zcml_error(e)}') from e
    except zc.lockfile.LockError as e:
        raise AlreadyRunning(
            f'Cannot open the database of {zope_conf}: {e} (another process'
            ' has it open)') from e
    except (ConfigurationError, AlreadyRunning):
        raise
    except Exception as e:
        raise ConfigurationError(
            f'Cannot start Zope from {zope_conf}: {config.reason(e)}'
        ) from e
    finally:
        # Zope gives the thread that started it no security manager.
        AccessControl.SecurityManagement.noSecurityManager()
    zope.event.notify(zope.processlifetime.ProcessStarting())


def stop():
    """Close Zope's databases: the process cannot set Zope up again."""
    global _stopped
    if _started is None or _stopped:
        return
    _stopped = True
    dbtab = getattr(App.config.getConfiguration(), 'dbtab', None)
    databases = list(getattr(dbtab, 'databases', {}).values())
    if Zope2.DB is not None and Zope2.DB not in databases:
        databases.append(Zope2.DB)
    for db in databases:
        db.close()


def server_url():
    """The SERVER_URL of the runners' requests: ``server-url`` of
    ``<product-config gocept.runner>`` in zope.conf, else
    DEFAULT_SERVER_URL."""
    products = getattr(App.config.getConfiguration(), 'product_config',
                       None) or {}
    return (products.get(PRODUCT) or {}).get(
        SERVER_URL_KEY, DEFAULT_SERVER_URL)


def _check_server_url(zope_conf):
    url = server_url()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ('http', 'https') or not parts.netloc or (
            parts.path not in ('', '/')):
        raise ConfigurationError(
            f'Invalid {SERVER_URL_KEY} {url!r} in <product-config {PRODUCT}>'
            f' of {zope_conf}: not an http or https URL of a server, such as'
            ' https://www.example.com')


def with_request(app):
    """The OFS application `app`, wrapped in a request of its own whose
    SERVER_URL is server_url(), as Zope's makerequest makes one."""
    app = makerequest(app, environ={'SERVER_URL': server_url().rstrip('/')})
    publish(app.REQUEST, app)
    return app


def publish(request, obj):
    """Make `request` look as if it had published `obj`, as Zope's
    publisher leaves it: ``PUBLISHED`` is `obj`, ``PARENTS`` the objects
    above it, the nearest first (the root: only the root)."""
    chain = [item for item in aq_chain(aq_inner(obj))
             if ITraversable.providedBy(item)]
    request['PUBLISHED'] = obj
    request['PARENTS'] = chain[1:] or chain


def published():
    """The nearest object stored in a database above the object that the
    current request (zope.globalrequest's) has published, or None: where
    jobs are put outside a component site (see
    gocept.runner.jobs.lookup)."""
    request = zope.globalrequest.getRequest()
    parents = [] if request is None else request.get('PARENTS') or []
    for obj in parents:
        if getattr(obj, '_p_jar', None) is not None:
            return obj
    return None


def current_user_id():
    """The id of the user of Zope's security manager, or None (the
    anonymous user, or none)."""
    user = AccessControl.SecurityManagement.getSecurityManager().getUser()
    return None if user is None else user.getId()


def is_zope_object(obj):
    """Whether `obj` is an object of Zope's (of this module's stack)."""
    return ITraversable.providedBy(obj)


def find_site(root, path):
    """The object at `path` (such as ``sites/intranet``) below the OFS
    application `root`, or `root` if `path` is None; UnknownSite if there
    is none (acquisition finds no object elsewhere)."""
    if path is None:
        return root
    names = tuple(name for name in path.split('/') if name)
    obj = root.unrestrictedTraverse(names, None) if names else root
    physical = getattr(obj, 'getPhysicalPath', None)
    if physical is None or physical() != root.getPhysicalPath() + names:
        raise UnknownSite(
            f'Unknown site {path!r}: the Zope application has no object'
            f' /{"/".join(names)}')
    return obj


def nearest_site(obj):
    """`obj` if it is a component site, else the nearest site above it,
    else None: the site that Zope's publisher leaves set when it has
    traversed to `obj`."""
    for item in aq_chain(aq_inner(obj)):
        if ISite.providedBy(item):
            return item
    return None


def find_user(obj, user_id):
    """The Zope user `user_id`, wrapped in the user folder that knows it.

    Like Zope's publisher, this asks the ``acl_users`` of `obj`, then those
    of the objects above it, up to the root's.  Raises ConfigurationError
    if none knows it.
    """
    for item in aq_chain(aq_inner(obj)):
        if getattr(aq_base(item), 'acl_users', None) is None:
            continue
        acl_users = item.acl_users
        user = acl_users.getUserById(user_id)
        if user is not None:
            if aq_parent(user) is None:
                user = user.__of__(acl_users)
            return user
    raise ConfigurationError(
        f'Unknown user {user_id!r}: no acl_users from'
        f' {"/".join(obj.getPhysicalPath()) or "/"} up to the root knows it')


def user_of(user):
    """The arguments of a transaction's setUser that name the Zope user
    `user` as Zope's publisher does: its id, and the path of the folder
    of its user folder."""
    return user.getId(), '/'.join(aq_parent(user).getPhysicalPath()[1:-1])


class Annotation:
    """Annotates every transaction that the thread of `loop` ends, as Zope
    annotates a request's: the path of the loop's object and the worker
    as its note, the user the tick runs as (and the path of the folder of
    its user folder) as its user, unless the worker set one.

    A synchronizer of the thread's transaction manager: it sees the
    transactions that transaction_per_item commits in a tick, too, which
    begin without the manager's begin().
    """

    def __init__(self, loop):
        self.loop = loop
        # Made once: the loop's object and worker stay for its run.
        self.note = (f'{"/".join(loop.path) or "/"} (gocept.runner worker'
                     f' {loop.name})')
        self._user = self._user_args = None

    def beforeCompletion(self, txn):
        txn.note(self.note)
        user = self.loop.interactions.principal
        if user is not None and not txn.user:
            if user is not self._user:
                self._user, self._user_args = user, user_of(user)
            txn.setUser(*self._user_args)

    def afterCompletion(self, txn):
        pass

    def newTransaction(self, txn):
        pass


class ZopeLoop(MainLoop):
    """A MainLoop on an object of a Zope 4+ instance, `app`, found by its
    path from the OFS application (see find_site).

    Each run of the loop (in the Process's thread and database connection)
    finds `app` again by its path, in a request of its own (`request`,
    zope.globalrequest's request for the run, which has `app` as its
    ``PUBLISHED``: see `publish`), and makes the nearest component site the
    site.  `principal` is the id of a Zope user (see
    find_user): every tick runs with that user's security manager, and in
    a security interaction whose participation has the user as principal.
    Every transaction the loop ends is annotated (see Annotation).
    """

    def __init__(self, app, ticks, worker, **settings):
        super().__init__(app, ticks, worker, **settings)
        self.interactions.find = lambda user_id: find_user(self.app, user_id)
        self.path = app.getPhysicalPath()
        self.request = None

    def __call__(self):
        if self.process is None:
            super().__call__()  # in a Process of its own, which calls us
            return
        old_site = zope.component.hooks.getSite()
        root = with_request(self.app._p_jar.root()[APPLICATION])
        self.request = root.REQUEST
        self.app = root.unrestrictedTraverse(self.path)
        publish(self.request, self.app)
        zope.globalrequest.setRequest(self.request)
        # The manager keeps its synchronizers in a WeakSet.
        annotation = Annotation(self)
        transaction.manager.registerSynch(annotation)
        try:
            zope.component.hooks.setSite(nearest_site(self.app))
            super().__call__()
        finally:
            transaction.manager.unregisterSynch(annotation)
            AccessControl.SecurityManagement.noSecurityManager()
            zope.globalrequest.clearRequest()
            zope.component.hooks.setSite(old_site)
            self.request = None

    run = __call__

    def begin(self):
        """Begin the tick as MainLoop does, as the user."""
        super().begin()
        user = self.interactions.principal
        if user is not None:
            self.request['AUTHENTICATED_USER'] = user
            AccessControl.SecurityManagement.newSecurityManager(
                self.request, user)

    def act_as(self, principal_id):
        """Run the rest of the tick as the Zope user `principal_id` (see
        find_user; None: as the loop's own user, if it has one)."""
        user = self.interactions.act_as(principal_id)
        if user is None:
            AccessControl.SecurityManagement.noSecurityManager()
        else:
            self.request['AUTHENTICATED_USER'] = user
            AccessControl.SecurityManagement.newSecurityManager(
                self.request, user)

    def annotate_user(self, txn, principal_id):
        """Name the Zope user `principal_id` as the user of `txn` (see
        user_of); one that no user folder knows (any longer) by its id."""
        try:
            txn.setUser(*user_of(find_user(self.app, principal_id)))
        except ConfigurationError:
            txn.setUser(principal_id)

    def commit(self):
        super().commit()
        AccessControl.SecurityManagement.noSecurityManager()

    def abort(self):
        super().abort()
        AccessControl.SecurityManagement.noSecurityManager()
