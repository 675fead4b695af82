"""Workers that the tests of a Zope 4+ instance run with ``gocept-runner``
or as programs of their own.  The words after the worker on the command
line are its arguments (in sys.argv); ZOPE_TEST_DIR is a directory for the
files by which a worker and its test wait for each other.
"""

import functools
import os
import sys
import time

import zope.component.hooks
import zope.globalrequest
from AccessControl import getSecurityManager
from OFS.Folder import manage_addFolder
from OFS.userfolder import manage_addUserFolder
from Products.Five.component import enableSite
from Products.Five.component.interfaces import IObjectManagerSite
from zope.component.globalregistry import getGlobalSiteManager
from zope.component.persistentregistry import PersistentComponents

import gocept.runner
import gocept.runner.jobs


def _site():
    return zope.component.hooks.getSite()


def _app():
    """The object the loop works on: the request's published object."""
    return zope.globalrequest.getRequest()['PUBLISHED']


def _signal(name):
    open(os.path.join(os.environ['ZOPE_TEST_DIR'], name), 'w').close()


def _wait_for(name, timeout=30):
    path = os.path.join(os.environ['ZOPE_TEST_DIR'], name)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f'{path} did not appear')
        time.sleep(0.01)


def setup():
    """Make the folder ``sites/intranet`` a component site with a user
    folder of its own that knows ``editor``."""
    app = _app()
    manage_addFolder(app, 'sites')
    manage_addFolder(app.sites, 'intranet')
    intranet = app.sites.intranet
    enableSite(intranet, iface=IObjectManagerSite)
    components = PersistentComponents()
    components.__bases__ = (getGlobalSiteManager(),)
    intranet.setSiteManager(components)
    manage_addUserFolder(intranet)
    intranet.acl_users._doAddUser('editor', 'secret', ['Manager'], [])
    intranet.count = 0
    return gocept.runner.Exit


def create():
    """Create the folder sys.argv[1] in the site: what the worker saw is
    kept in its attributes ``seen_*``."""
    site = _app()
    manage_addFolder(site, sys.argv[1])
    folder = site[sys.argv[1]]
    folder.seen_site = '/'.join(_site().getPhysicalPath())
    folder.seen_user = getSecurityManager().getUser().getId()
    folder.seen_url = folder.absolute_url()
    return gocept.runner.Exit


def host_a():
    """Create the folder ``host-a`` in the site, in a host's thread."""
    manage_addFolder(_app(), 'host-a')
    return gocept.runner.Exit


def host_b():
    """Create the folder ``host-b`` in the site, in a host's thread."""
    manage_addFolder(_app(), 'host-b')
    return gocept.runner.Exit


@gocept.runner.transaction_per_item
def items():
    """Create the folders ``item-1`` and ``item-2`` in the site, each in
    a transaction of its own."""
    for number in (1, 2):
        yield functools.partial(manage_addFolder, _app(), f'item-{number}')


def sleeper():
    """Tick once an hour; the first tick makes the file ``ticked``."""
    _signal('ticked')


def bump():
    """Add one to the site's ``count`` in one tick: the file
    ``read-NAME`` (NAME: sys.argv[1]) says that it has read the count,
    which it writes once the file ``go`` is there."""
    site = _app()
    count = site.count
    _signal(f'read-{sys.argv[1]}')
    _wait_for('go')
    site.count = count + 1
    return gocept.runner.Exit


@gocept.runner.appmain(
    ticks=3600, principal=gocept.runner.from_config('zopeworkers', 'user'))
def program():
    """A console script: create the folder ``by-program`` as the user of
    ``<product-config zopeworkers>``."""
    site = _site()
    manage_addFolder(site, 'by-program')
    site['by-program'].seen_user = getSecurityManager().getUser().getId()
    return gocept.runner.Exit


@gocept.runner.jobs.job(retries=0)
def make_folder(name):
    """A job: create the folder `name` in the object of the worker's loop,
    keeping the user it ran as and the site."""
    obj = _app()
    manage_addFolder(obj, name)
    obj[name].seen_user = getSecurityManager().getUser().getId()
    site = _site()
    obj[name].seen_site = None if site is None else '/'.join(
        site.getPhysicalPath())
    return name


def put():
    """Put the job make_folder(sys.argv[1]) in a tick; the file ``put``
    has its id."""
    job_id = make_folder.delay(sys.argv[1])
    with open(os.path.join(os.environ['ZOPE_TEST_DIR'], 'put'), 'w') as f:
        f.write(job_id)
    return gocept.runner.Exit


class PutJob:
    """The view ``@@put-job`` of a Zope instance (see test_zope_jobs): it
    puts the job make_folder(name) in the request's transaction, `name`
    from the form, and answers with the job's id; with ``fail`` in the
    form, it raises after that."""

    def __init__(self, context, request):
        self.context, self.request = context, request

    def __call__(self):
        job_id = make_folder.delay(self.request.form['name'])
        if self.request.form.get('fail'):
            raise ValueError('the request fails after its put')
        return job_id


@gocept.runner.jobs.periodic(1)
def every_second():
    """A scheduled job: add one to ``scheduled`` of the worker's object;
    make the file ``scheduled``."""
    obj = _app()
    obj.scheduled = getattr(obj, 'scheduled', 0) + 1
    _signal('scheduled')
