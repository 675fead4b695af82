"""Workers that the tests of a Plone 6 site run with ``gocept-runner``
or as programs of their own.  The words after the worker on the command
line are its arguments (in sys.argv).
"""

import sys

import plone.api
import zope.globalrequest
from AccessControl import getSecurityManager
from Products.CMFPlone.factory import addPloneSite

import gocept.runner
import gocept.runner.jobs


#: The id of the site, and the profile that brings its content types.
SITE = 'Plone'
CONTENT_TYPES = 'plone.app.contenttypes:default'


def add_site():
    """Make the Plone site ``Plone`` with Plone's site factory, and its
    user ``editor`` (a Contributor and Editor); run at the root as a
    Manager of the root."""
    root = zope.globalrequest.getRequest()['PUBLISHED']
    site = addPloneSite(root, SITE, extension_ids=[CONTENT_TYPES],
                        setup_content=False)
    site.count = 0
    with plone.api.env.adopt_roles(['Manager']):
        plone.api.user.create(
            email='editor@example.com', username='editor',
            password='secret-editor', roles=['Contributor', 'Editor'])
    return gocept.runner.Exit


def create():
    """Create the Document sys.argv[1] in the portal with plone.api; keep
    what the worker saw on it: its portal's path, the user and its URL."""
    portal = plone.api.portal.get()
    document = plone.api.content.create(
        container=portal, type='Document', id=sys.argv[1],
        title=f'Made by {sys.argv[1]}')
    document.seen_portal = '/'.join(portal.getPhysicalPath())
    document.seen_user = plone.api.user.get_current().getId()
    document.seen_url = document.absolute_url()
    return gocept.runner.Exit


@gocept.runner.jobs.job(retries=0)
def create_later(name):
    """A job: create the Document `name` in the portal with plone.api."""
    document = plone.api.content.create(
        container=plone.api.portal.get(), type='Document', id=name,
        title=f'Made by a job: {name}')
    document.seen_user = getSecurityManager().getUser().getId()
    return document.absolute_url()


def create_and_put():
    """Create the Document sys.argv[1] (see `create`), and put the job
    create_later(sys.argv[2])."""
    create_later.delay(sys.argv[2])
    return create()


@gocept.runner.appmain(
    ticks=3600, principal=gocept.runner.from_config('ploneworkers', 'user'))
def nightly():
    """A console script: create the Document ``by-program`` with plone.api
    as the user of ``<product-config ploneworkers>``."""
    plone.api.content.create(
        container=plone.api.portal.get(), type='Document', id='by-program',
        title='Made by a console script')
    return gocept.runner.Exit
