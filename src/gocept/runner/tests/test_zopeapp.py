"""Runners on a Zope 4+ instance that Zope's mkwsgiinstance made: real
processes of ``gocept-runner`` and of a decorated console script."""

import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import transaction
import ZEO
import ZODB
import ZODB.FileStorage

from gocept.runner import testing
from gocept.runner.tests.docpage import DOCS
from gocept.runner.tests.docpage import DocPageSuite


BIN = os.path.dirname(sys.executable)
# Not imported here: it needs Zope.
WORKERS = 'gocept.runner.tests.zopeworkers'
TIMEOUT = 60

# What pip writes for a console_scripts entry point.
WRAPPER = """\
#!{python}
import sys
from {module} import {name}
if __name__ == '__main__':
    sys.exit({name}())
"""

SERVER_URL = """
<product-config gocept.runner>
  server-url https://www.example.com
</product-config>
"""

# The user of the program of zopeworkers, for from_config.
USER = """
<product-config zopeworkers>
  user editor
</product-config>
"""


class SiteLayer:
    """The instance of ZOPE_INSTANCE_LAYER, on its FileStorage and on its
    ZEO server, with the component site ``sites/intranet`` whose own user
    folder knows ``editor`` (the root's knows ``admin``)."""

    __bases__ = (testing.ZOPE_INSTANCE_LAYER,)
    __name__ = 'SiteLayer'
    __module__ = __name__

    @classmethod
    def setUp(cls):
        layer = testing.ZOPE_INSTANCE_LAYER
        if layer.missing:
            return
        # Zope makes the user of ``inituser`` in a new database, and
        # removes the file.
        inituser = os.path.join(layer.instance, 'inituser')
        with open(inituser) as f:
            user = f.read()
        for conf in layer.zope_conf, layer.zeo_conf:
            with open(inituser, 'w') as f:
                f.write(user)
            subprocess.run(
                [os.path.join(BIN, 'gocept-runner'), '-C', conf, '--once',
                 '--principal', 'admin', f'{WORKERS}:setup'],
                check=True, timeout=TIMEOUT)

    @classmethod
    def tearDown(cls):
        pass


SITE_LAYER = SiteLayer()


class InstanceTestCase(unittest.TestCase):
    """Running programs on the instance of SITE_LAYER."""

    layer = SITE_LAYER

    def setUp(self):
        instance = testing.ZOPE_INSTANCE_LAYER
        if instance.missing:
            if os.environ.get('CI') == 'true':
                self.fail(instance.missing)
            self.skipTest(instance.missing)
        self.zope_conf = instance.zope_conf
        self.zeo_conf = instance.zeo_conf
        self.data_fs = os.path.join(instance.instance, 'var', 'Data.fs')
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def path(self, *names):
        return os.path.join(self.dir, *names)

    def conf_with_server_url(self):
        """The instance's zope.conf with a SERVER_URL for the requests."""
        path = self.path('zope.conf')
        with open(self.zope_conf) as f, open(path, 'w') as conf:
            conf.write(f.read() + SERVER_URL)
        return path

    def start(self, *args, command=None, **env):
        """Start `command` (default: gocept-runner) with `args`; its
        output goes to the file ``output``."""
        command = command or [os.path.join(BIN, 'gocept-runner')]
        with open(self.path('output'), 'ab') as output:
            process = subprocess.Popen(
                [*command, *args], cwd=self.dir, stdout=output,
                stderr=output, env=dict(os.environ, ZOPE_TEST_DIR=self.dir,
                                        COLUMNS='80', **env))
        self.addCleanup(process.wait)
        self.addCleanup(_kill, process)
        return process

    def run_runner(self, *args, **kw):
        """Run the command to its end; return its status and output."""
        status = self.start(*args, **kw).wait(TIMEOUT)
        return status, self.output()

    def output(self):
        with open(self.path('output')) as f:
            return f.read()

    def wait_for(self, name):
        deadline = time.monotonic() + TIMEOUT
        while not os.path.exists(self.path(name)):
            self.assertLess(time.monotonic(), deadline,
                            f'No {name}; output: {self.output()}')
            time.sleep(0.02)

    def opened(self, conf_kind='filestorage'):
        """The OFS application in a database of the instance, and the
        last transaction of its storage (closed at the test's end)."""
        if conf_kind == 'zeo':
            db = ZEO.DB(('127.0.0.1', testing.ZOPE_INSTANCE_LAYER.server.port))
        else:
            db = ZODB.DB(ZODB.FileStorage.FileStorage(
                self.data_fs, read_only=True))
        self.addCleanup(db.close)
        connection = db.open()
        self.addCleanup(connection.close)
        self.addCleanup(transaction.abort)
        last = None
        if conf_kind != 'zeo':
            *_, last = db.storage.iterator()
        return connection.root()['Application'], last


class ZopeInstanceTests(InstanceTestCase):

    def test_a_worker_creates_an_object_as_a_user_of_its_site(self):
        status, output = self.run_runner(
            '-C', self.conf_with_server_url(), '-s', 'sites/intranet',
            '--principal', 'editor', '--once', f'{WORKERS}:create',
            'by-editor')
        self.assertEqual((0, ''), (status, output))
        app, last = self.opened()
        folder = app.sites.intranet['by-editor']
        self.assertEqual((['sites', 'intranet', 'acl_users'], 'editor'),
                         folder.getOwnerTuple())
        self.assertEqual('/sites/intranet', folder.seen_site)
        self.assertEqual('editor', folder.seen_user)
        self.assertEqual(
            'https://www.example.com/sites/intranet/by-editor',
            folder.seen_url)
        # As Zope's publisher annotates the transaction of a request.
        self.assertEqual(b'sites/intranet editor', last.user)
        self.assertEqual(b'/sites/intranet (gocept.runner worker create)',
                         last.description)

    def test_a_user_of_the_root_works_on_a_site_below_it(self):
        status, output = self.run_runner(
            '-C', self.zope_conf, '-s', '/sites/intranet/',
            '--principal', 'admin', '--once', '--lock-file', 'run.lock',
            '--metrics-file', 'metrics.prom', f'{WORKERS}:create',
            'by-admin')
        self.assertEqual((0, ''), (status, output))
        with open(self.path('metrics.prom')) as f:
            self.assertIn('gocept_runner_ticks_total{outcome="committed",'
                          f'worker="{WORKERS}.create"}} 1.0\n', f.read())
        app, last = self.opened()
        folder = app.sites.intranet['by-admin']
        self.assertEqual((['acl_users'], 'admin'), folder.getOwnerTuple())
        self.assertEqual('http://nohost/sites/intranet/by-admin',
                         folder.seen_url)
        self.assertEqual(b' admin', last.user)

    def transactions(self, number):
        """User and description of the last `number` transactions of the
        FileStorage."""
        storage = ZODB.FileStorage.FileStorage(self.data_fs, read_only=True)
        try:
            return [(txn.user, txn.description)
                    for txn in storage.iterator()][-number:]
        finally:
            storage.close()

    def test_every_transaction_of_transaction_per_item_is_annotated(self):
        status, output = self.run_runner(
            '-C', self.zope_conf, '-s', 'sites/intranet', '--principal',
            'editor', '--once', f'{WORKERS}:items')
        self.assertEqual((0, ''), (status, output))
        self.assertEqual(
            2 * [(b'sites/intranet editor',
                  b'/sites/intranet (gocept.runner worker items)')],
            self.transactions(2))
        app, _ = self.opened()
        self.assertEqual(
            2 * [(['sites', 'intranet', 'acl_users'], 'editor')],
            [app.sites.intranet[name].getOwnerTuple()
             for name in ('item-1', 'item-2')])

    def test_a_host_runs_two_workers_in_threads_of_one_process(self):
        status, output = self.run_runner(
            '-C', self.zope_conf, '-s', 'sites/intranet', '--principal',
            'editor', '--once', f'{WORKERS}:host_a', f'{WORKERS}:host_b')
        self.assertEqual((0, ''), (status, output))
        self.assertEqual(
            [(b'sites/intranet editor',
              b'/sites/intranet (gocept.runner worker host_a)'),
             (b'sites/intranet editor',
              b'/sites/intranet (gocept.runner worker host_b)')],
            sorted(self.transactions(2)))
        app, _ = self.opened()
        self.assertEqual(
            2 * [(['sites', 'intranet', 'acl_users'], 'editor')],
            [app.sites.intranet[name].getOwnerTuple()
             for name in ('host-a', 'host-b')])

    def test_a_decorated_console_script_runs_on_the_instance(self):
        script = self.path('program')
        with open(script, 'w') as f:
            f.write(WRAPPER.format(python=sys.executable, module=WORKERS,
                                   name='program'))
        os.chmod(script, 0o755)
        conf = self.path('zope.conf')
        with open(self.zope_conf) as f, open(conf, 'w') as out:
            out.write(f.read() + USER)
        status, output = self.run_runner(
            '-C', conf, '-s', 'sites/intranet', command=[script])
        self.assertEqual((0, ''), (status, output))
        app, last = self.opened()
        folder = app.sites.intranet['by-program']
        self.assertEqual('editor', folder.seen_user)
        self.assertEqual((['sites', 'intranet', 'acl_users'], 'editor'),
                         folder.getOwnerTuple())
        self.assertEqual(
            b'/sites/intranet (gocept.runner worker program)',
            last.description)

    def test_SIGTERM_ends_a_sleeping_loop_at_once(self):
        process = self.start('-C', self.zope_conf, '-s', 'sites/intranet',
                             '--ticks', '3600', f'{WORKERS}:sleeper')
        self.wait_for('ticked')
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        self.assertEqual(0, process.wait(TIMEOUT))
        # Well below the tick of an hour: the loop does not sleep on.
        self.assertLess(time.monotonic() - sent, 10)

    def test_a_conflict_with_a_second_process_is_retried(self):
        app, _ = self.opened('zeo')
        before = app.sites.intranet.count
        first, second = (
            self.start('-C', self.zeo_conf, '-s', 'sites/intranet',
                       '--once', f'{WORKERS}:bump', name)
            for name in ('first', 'second'))
        self.wait_for('read-first')
        self.wait_for('read-second')
        # Both have read the count: the second commit conflicts.
        open(self.path('go'), 'w').close()
        self.assertEqual((0, 0), (first.wait(TIMEOUT), second.wait(TIMEOUT)),
                         self.output())
        transaction.abort()
        self.assertEqual(before + 2, app.sites.intranet.count)


class BadInputTests(InstanceTestCase):
    """What a person must fix: one line, exit status 2, nothing written."""

    def assertUsageError(self, message, *args, **kw):
        with open(self.data_fs, 'rb') as f:
            before = hashlib.sha256(f.read()).hexdigest()
        status, output = self.run_runner(*args, **kw)
        self.assertEqual((2, message), (status, output))
        with open(self.data_fs, 'rb') as f:
            self.assertEqual(before, hashlib.sha256(f.read()).hexdigest())

    def test_an_unknown_user(self):
        self.assertUsageError(
            "gocept-runner: Unknown user 'nobody': no acl_users from"
            " /sites/intranet up to the root knows it\n",
            '-C', self.zope_conf, '-s', 'sites/intranet', '--principal',
            'nobody', f'{WORKERS}:create', 'never')

    def test_a_user_of_another_site(self):
        self.assertUsageError(
            "gocept-runner: Unknown user 'editor': no acl_users from"
            " /sites up to the root knows it\n",
            '-C', self.zope_conf, '-s', 'sites', '--principal', 'editor',
            f'{WORKERS}:create', 'never')

    def test_a_path_that_names_nothing(self):
        self.assertUsageError(
            "gocept-runner: Unknown site 'sites/extranet': the Zope"
            " application has no object /sites/extranet\n",
            '-C', self.zope_conf, '-s', 'sites/extranet',
            f'{WORKERS}:create', 'never')

    def test_a_path_that_acquisition_would_find_elsewhere(self):
        self.assertUsageError(
            "gocept-runner: Unknown site 'sites/intranet/sites': the Zope"
            " application has no object /sites/intranet/sites\n",
            '-C', self.zope_conf, '-s', 'sites/intranet/sites',
            f'{WORKERS}:create', 'never')

    def test_an_instance_zope_conf_that_Zope_rejects(self):
        conf = self.path('zope.conf')
        with open(conf, 'w') as f:
            f.write(f'instancehome {self.path("nowhere")}\n')
        self.assertUsageError(
            f'gocept-runner: Invalid configuration file {conf}, line 1:'
            f' {self.path("nowhere")} is not an existing directory\n',
            '-C', conf, f'{WORKERS}:create', 'never')

    def test_a_zope_conf_of_neither_kind(self):
        conf = self.path('zope.conf')
        with open(self.zope_conf) as f:
            lines = [line for line in f
                     if not line.startswith('instancehome')]
        with open(conf, 'w') as f:
            f.writelines(lines)
        line = 1 + [line.split()[:1] for line in lines].index(
            ['<zodb_db'])
        self.assertUsageError(
            f'gocept-runner: Invalid configuration file {conf}, line {line}:'
            " unknown type name: 'zodb_db'\n",
            '-C', conf, f'{WORKERS}:create', 'never')

    def test_an_error_in_the_ZCML_of_the_instance(self):
        # A copy of the instance whose site.zcml includes a package that
        # is not there.
        instance = self.path('instance')
        shutil.copytree(testing.ZOPE_INSTANCE_LAYER.instance, instance)
        conf = os.path.join(instance, 'etc', 'zope.conf')
        with open(conf) as f:
            text = f.read()
        with open(conf, 'w') as f:
            f.write(text.replace(testing.ZOPE_INSTANCE_LAYER.instance,
                                 instance))
        site_zcml = os.path.join(instance, 'etc', 'site.zcml')
        with open(site_zcml) as f:
            text = f.read()
        with open(site_zcml, 'w') as f:
            f.write(text.replace(
                '<include package="Zope2.App" />',
                '<include package="Zope2.App" />\n'
                '  <include package="no.such.package" />'))
        self.data_fs = os.path.join(instance, 'var', 'Data.fs')
        self.assertUsageError(
            'gocept-runner: Error in the ZCML of the instance of'
            f' {conf}: Invalid value for \'package\'; File "{site_zcml}",'
            ' line 7.2-7.39; zope.schema._bootstrapinterfaces.ValidationError:'
            " ImportError: Couldn't import no.such, No module named 'no'\n",
            '-C', conf, f'{WORKERS}:create', 'never')

    def test_a_server_url_that_is_not_one(self):
        conf = self.path('zope.conf')
        with open(self.zope_conf) as f, open(conf, 'w') as out:
            out.write(f.read() + SERVER_URL.replace(
                'https://www.example.com', 'www.example.com'))
        self.assertUsageError(
            "gocept-runner: Invalid server-url 'www.example.com' in"
            f' <product-config gocept.runner> of {conf}: not an http or'
            ' https URL of a server, such as https://www.example.com\n',
            '-C', conf, f'{WORKERS}:create', 'never')

    def test_a_zope_conf_that_is_not_there(self):
        conf = self.path('etc', 'zope.conf')
        self.assertUsageError(
            f'gocept-runner: Configuration file not found: {conf}\n',
            '-C', conf, f'{WORKERS}:create', 'never')

    def test_Zope_not_installed(self):
        # The interpreter finds no Zope2 (None in sys.modules: as if it
        # were not installed).
        command = [
            sys.executable, '-c',
            "import sys; sys.modules['Zope2'] = None;"
            " from gocept.runner.cli import script;"
            " script()"]
        self.assertUsageError(
            f'gocept-runner: {self.zope_conf} is the zope.conf of a Zope 4+'
            ' instance, but Zope is not installed (install'
            " gocept.runner[zope]): import of Zope2 halted; None in"
            ' sys.modules\n',
            '-C', self.zope_conf, 'os:getpid', command=command)


def _kill(process):
    if process.poll() is None:
        process.kill()


def test_suite():
    loader = unittest.defaultTestLoader
    suite = unittest.TestSuite([
        loader.loadTestsFromTestCase(ZopeInstanceTests),
        loader.loadTestsFromTestCase(BadInputTests),
    ])
    # The how-to, run as a reader runs it; where Zope is installed, and not
    # where the package is installed without its checkout.
    if os.path.isdir(DOCS) and (
            importlib.util.find_spec('Zope2') is not None):
        page = DocPageSuite('howto/zope.rst')
        page.layer = testing.DocsLayer
        suite.addTest(page)
    return suite
