"""Runners, jobs and a console script on a Plone 6 site: real processes
of ``gocept-runner``, ``gocept-jobs`` and a decorated console script on
the site of PLONE_SITE_LAYER, whose workers use plone.api."""

import importlib.util
import os
import shutil
import signal
import sys
import tempfile
import time
import unittest

import transaction
import ZEO
from Acquisition import aq_base

from gocept.runner import testing
from gocept.runner.tests.docpage import DOCS
from gocept.runner.tests.docpage import DocPageSuite
from gocept.runner.tests.test_zopeapp import BIN
from gocept.runner.tests.test_zopeapp import SERVER_URL
from gocept.runner.tests.test_zopeapp import TIMEOUT
from gocept.runner.tests.test_zopeapp import WRAPPER
from gocept.runner.tests.test_zopeapp import InstanceTestCase


# Not imported here: they need Plone.
WORKERS = 'gocept.runner.tests.ploneworkers'
ZOPE_WORKERS = 'gocept.runner.tests.zopeworkers'

# The user of the console script of ploneworkers, for from_config.
USER = """
<product-config ploneworkers>
  user editor
</product-config>
"""


class PloneTestCase(InstanceTestCase):
    """Running programs on the Plone site of PLONE_SITE_LAYER."""

    layer = testing.PLONE_SITE_LAYER

    def setUp(self):
        layer = testing.PLONE_SITE_LAYER
        if layer.missing:
            # In CI, too: tox -e plone runs these (see PloneSiteLayer).
            self.skipTest(layer.missing)
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.conf = self.path('zope.conf')
        with open(layer.zeo_conf) as f, open(self.conf, 'w') as conf:
            conf.write(f.read() + SERVER_URL + USER)

    def opened(self):
        """The OFS application in a connection of its own to the site's
        ZEO server (closed at the test's end), and the storage."""
        db = ZEO.DB(('127.0.0.1', testing.PLONE_SITE_LAYER.server.port))
        self.addCleanup(db.close)
        connection = db.open()
        self.addCleanup(connection.close)
        self.addCleanup(transaction.abort)
        return connection.root()['Application'], db.storage

    def annotation(self, storage, obj):
        """User and description of the transaction that last wrote
        `obj`."""
        serial = obj._p_serial
        txn, = storage.iterator(serial, serial)
        return txn.user, txn.description

    def assertMadeBy(self, user, document):
        self.assertEqual((['Plone', 'acl_users'], user),
                         document.getOwnerTuple())
        self.assertEqual(((user, ('Owner',)),), document.get_local_roles())
        self.assertEqual((user,), aq_base(document).creators)


class PloneTests(PloneTestCase):

    def test_a_tick_creates_content_with_plone_api_and_puts_a_job(self):
        status, output = self.run_runner(
            '-C', self.conf, '-s', 'Plone', '--principal', 'editor',
            '--once', f'{WORKERS}:create_and_put', 'by-tick', 'by-job')
        self.assertEqual((0, ''), (status, output))
        app, storage = self.opened()
        document = app.Plone['by-tick']
        self.assertEqual('Made by by-tick', document.Title())
        self.assertMadeBy('editor', document)
        self.assertEqual(('/Plone', 'editor'),
                         (document.seen_portal, document.seen_user))
        self.assertEqual('https://www.example.com/Plone/by-tick',
                         document.seen_url)
        # As Zope's publisher annotates the transaction of a request.
        self.assertEqual(
            (b'Plone editor', b'/Plone (gocept.runner worker create_and_put)'),
            self.annotation(storage, document))
        self.assertNotIn('by-job', app.Plone)

        status, output = self.run_runner(
            'work', '-C', self.conf, '-s', 'Plone', '--burst', '--import',
            WORKERS, command=[os.path.join(BIN, 'gocept-jobs')])
        self.assertEqual((0, ''), (status, output))
        transaction.abort()
        document = app.Plone['by-job']
        self.assertEqual('editor', document.seen_user)
        self.assertMadeBy('editor', document)
        user, description = self.annotation(storage, document)
        # As the runner's own transactions (and Zope's publisher) name it.
        self.assertEqual(b'Plone editor', user)
        self.assertRegex(description.decode(), (
            rf'^gocept.runner.jobs: run job {WORKERS}:create_later \w+\n'
            r'/Plone \(gocept.runner worker work\)$'))

    def test_a_console_script_runs_every_night_as_a_user(self):
        script = self.path('nightly')
        with open(script, 'w') as f:
            f.write(WRAPPER.format(python=sys.executable, module=WORKERS,
                                   name='nightly'))
        os.chmod(script, 0o755)
        status, output = self.run_runner(
            '-C', self.conf, '-s', 'Plone', command=[script])
        self.assertEqual((0, ''), (status, output))
        app, storage = self.opened()
        document = app.Plone['by-program']
        self.assertMadeBy('editor', document)
        self.assertEqual(
            (b'Plone editor', b'/Plone (gocept.runner worker nightly)'),
            self.annotation(storage, document))

    def test_SIGTERM_ends_a_sleeping_loop_at_once(self):
        process = self.start('-C', self.conf, '-s', 'Plone',
                             '--ticks', '3600', f'{ZOPE_WORKERS}:sleeper')
        self.wait_for('ticked')
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        self.assertEqual(0, process.wait(TIMEOUT))
        self.assertLess(time.monotonic() - sent, 10)

    def test_a_conflict_with_a_second_process_is_retried(self):
        app, _ = self.opened()
        before = app.Plone.count
        first, second = (
            self.start('-C', self.conf, '-s', 'Plone', '--once',
                       f'{ZOPE_WORKERS}:bump', name)
            for name in ('first', 'second'))
        self.wait_for('read-first')
        self.wait_for('read-second')
        # Both have read the count: the second commit conflicts.
        open(self.path('go'), 'w').close()
        self.assertEqual((0, 0), (first.wait(TIMEOUT), second.wait(TIMEOUT)),
                         self.output())
        transaction.abort()
        self.assertEqual(before + 2, app.Plone.count)


class PloneBadInputTests(PloneTestCase):
    """What a person must fix: one line, exit status 2, nothing written."""

    def assertUsageError(self, message, *args):
        _, storage = self.opened()
        before = storage.lastTransaction()
        status, output = self.run_runner(*args)
        self.assertEqual((2, message), (status, output))
        storage.sync()
        self.assertEqual(before, storage.lastTransaction())

    def test_an_unknown_user(self):
        self.assertUsageError(
            "gocept-runner: Unknown user 'nobody': no acl_users from"
            " /Plone up to the root knows it\n",
            '-C', self.conf, '-s', 'Plone', '--principal', 'nobody',
            f'{WORKERS}:create', 'never')

    def test_an_unknown_site(self):
        self.assertUsageError(
            "gocept-runner: Unknown site 'Plone2': the Zope application has"
            " no object /Plone2\n",
            '-C', self.conf, '-s', 'Plone2', '--principal', 'editor',
            f'{WORKERS}:create', 'never')

    def test_a_zope_conf_of_neither_kind(self):
        with open(self.conf) as f:
            lines = [line for line in f
                     if not line.startswith('instancehome')]
        with open(self.conf, 'w') as f:
            f.writelines(lines)
        line = 1 + [line.split()[:1] for line in lines].index(['<zodb_db'])
        self.assertUsageError(
            f'gocept-runner: Invalid configuration file {self.conf}, line'
            f" {line}: unknown type name: 'zodb_db'\n",
            '-C', self.conf, '-s', 'Plone', f'{WORKERS}:create', 'never')


def test_suite():
    loader = unittest.defaultTestLoader
    suite = unittest.TestSuite([
        loader.loadTestsFromTestCase(PloneTests),
        loader.loadTestsFromTestCase(PloneBadInputTests),
    ])
    # The how-to, run as a reader runs it; where Plone is installed, and not
    # where the package is installed without its checkout.
    if os.path.isdir(DOCS) and (
            importlib.util.find_spec('Products.CMFPlone') is not None):
        page = DocPageSuite('howto/plone.rst')
        page.layer = testing.DocsLayer
        suite.addTest(page)
    return suite
