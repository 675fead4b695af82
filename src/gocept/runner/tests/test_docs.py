"""The examples of README.rst and docs/ that are not doctests, run as
written there (the deployment guides' are in test_deployment)."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import gocept.runner.config
import gocept.runner.testing
from gocept.runner.tests.test_deployment import CHECKOUT
from gocept.runner.tests.test_deployment import HERE
from gocept.runner.tests.test_deployment import HOWTO
from gocept.runner.tests.test_deployment import README
from gocept.runner.tests.test_deployment import howto
from gocept.runner.tests.test_deployment import readme_block


GOCEPT_RUNNER = os.path.join(os.path.dirname(sys.executable), 'gocept-runner')

# A worker that logs at INFO and WARNING, and a ZEO logger's INFO line.
WORKER = """\
import logging

def work():
    logging.getLogger('ZEO.test').info('ZEO chatter')
    logging.getLogger('mymod').info('did it')
    logging.getLogger('mymod').warning('careful')
"""


def python_block(path):
    """The first ``.. code-block:: python`` of the file `path`."""
    return readme_block('import ', path, '.. code-block:: python')


class DocsTest(unittest.TestCase):

    def setUp(self):
        if not os.path.isdir(HOWTO):
            self.skipTest('docs/ is not beside the package (no checkout)')
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def path(self, *names):
        return os.path.join(self.dir, *names)

    def write(self, name, text):
        os.makedirs(os.path.dirname(self.path(name)), exist_ok=True)
        with open(self.path(name), 'w') as f:
            f.write(text)
        return self.path(name)

    def run_command(self, args):
        env = dict(os.environ)
        env.pop('GOCEPT_RUNNER_CONFIG', None)
        return subprocess.run(args, cwd=self.dir, env=env,
                              capture_output=True, text=True, timeout=120)


class ExampleTest(DocsTest):
    """The example of README.rst and of the front page of the docs."""

    layer = gocept.runner.testing.DocsLayer

    def assertCounts(self, path):
        code = python_block(path)
        self.assertIn('def count():', code)
        self.write('count.py', code)
        # README's command, with ticks of no length.
        with open(path) as f:
            self.assertIn('    gocept-runner count:count\n', f.read())
        result = self.run_command(
            [GOCEPT_RUNNER, 'count:count', '--ticks', '0'])
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual([f'count is {n}' for n in range(1, 6)],
                         result.stdout.splitlines())
        # The count goes on.
        result = self.run_command(
            [GOCEPT_RUNNER, 'count:count', '--ticks', '0'])
        self.assertEqual('count is 6', result.stdout.splitlines()[0])

    def test_readme(self):
        self.assertCounts(README)

    def test_front_page(self):
        self.assertCounts(os.path.join(CHECKOUT, 'docs', 'index.rst'))


class LoggingTest(DocsTest):
    layer = gocept.runner.testing.DocsLayer

    def test_the_zope_conf_of_the_guide(self):
        self.write('zope.conf', readme_block(
            'site-definition etc/site.zcml', howto('logging')))
        os.makedirs(self.path('etc'))
        os.makedirs(self.path('var'))
        shutil.copy(os.path.join(HERE, 'ftesting.zcml'),
                    self.path('etc', 'site.zcml'))
        self.write('mymod.py', WORKER)
        result = self.run_command(
            [GOCEPT_RUNNER, '-C', 'zope.conf', 'mymod:work', '--once'])
        # The log directory must exist.
        self.assertEqual(2, result.returncode)
        self.assertIn('the directory of the log file var/log/runner.log'
                      ' does not exist', result.stderr)
        os.makedirs(self.path('var', 'log'))
        result = self.run_command(
            [GOCEPT_RUNNER, '-C', 'zope.conf', 'mymod:work', '--once'])
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual('WARNING mymod careful\n', result.stderr)
        with open(self.path('var', 'log', 'runner.log')) as f:
            log = f.read()
        self.assertRegex(log, r'(?m)^\S+ INFO mymod did it$')
        self.assertRegex(log, r'(?m)^\S+ WARNING mymod careful$')
        self.assertNotIn('ZEO chatter', log)

    def test_json_lines_and_the_context_fields(self):
        after = 'JSON lines for a log shipper'
        eventlog = readme_block('<eventlog>', howto('logging'), after)
        example = json.loads(readme_block('{"time"', howto('logging'), after))
        self.write('zope.conf', (
            f'site-definition {os.path.join(HERE, "ftesting.zcml")}\n'
            '<zodb>\n  <filestorage>\n    path Data.fs\n'
            '  </filestorage>\n</zodb>\n') + eventlog)
        os.makedirs(self.path('var', 'log'))
        self.write('mymod.py', WORKER)
        result = self.run_command(
            [GOCEPT_RUNNER, '-C', 'zope.conf', 'mymod:work', '--once'])
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertIn('INFO work 1 - mymod did it\n', result.stdout)
        with open(self.path('var', 'log', 'runner.json')) as f:
            lines = [json.loads(line) for line in f]
        [line] = [line for line in lines if line['message'] == 'did it']
        self.assertRegex(line.pop('time'),
                         r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$')
        del example['time']
        self.assertEqual(example, line)


class ZEOGuideTest(DocsTest):

    layer = gocept.runner.testing.ZEO_LAYER

    def assertRuns(self, zope_conf):
        """Run a worker with the guide's `zope_conf`, pointed at the
        layer's server and this test's directory."""
        zope_conf = zope_conf.replace(
            '127.0.0.1:8100', self.layer.server.address).replace(
            '/var/log/runners', self.dir)
        self.write('worker-1.conf', zope_conf)
        shutil.copy(os.path.join(HERE, 'minimal.zcml'),
                    self.path('site.zcml'))
        self.write('mymod.py', WORKER)
        result = self.run_command(
            [GOCEPT_RUNNER, '-C', 'worker-1.conf', 'mymod:work', '--once'])
        self.assertEqual(0, result.returncode, result.stderr)
        return result

    def test_zeoclient(self):
        self.assertRuns(readme_block('site-definition site.zcml',
                                     howto('zeo')))
        with open(self.path('worker-1.log')) as f:
            log = f.read()
        self.assertIn('mymod careful', log)
        # ``name`` prefixes the ZEO client's lines.
        self.assertRegex(log, r'ZEO.ClientStorage.*worker-1')

    def test_clientstorage_after_import_ZEO(self):
        zodb = readme_block('%import ZEO', howto('zeo'))
        self.assertIn('wait-timeout 5', zodb)
        guide = readme_block('site-definition site.zcml', howto('zeo'))
        self.assertRuns(re.sub(r'(?s)<zodb>.*</zodb>\n', lambda m: zodb,
                               guide))


class WorkerExamplesTest(DocsTest):
    """The workers of the guides, run with a zope.conf of the tests."""

    layer = gocept.runner.testing.DocsLayer

    def setUp(self):
        super().setUp()
        self.zope_conf = gocept.runner.testing.write_zope_conf(self.dir)

    def run_worker(self, module, code, *args):
        self.write(f'{module}.py', code)
        return self.run_command(
            [GOCEPT_RUNNER, '-C', self.zope_conf, *args])

    def test_the_program_under_a_supervisor(self):
        # zdaemon's and systemd's guide: limits and a heartbeat.
        code = readme_block('import gocept.runner', howto('zdaemon'))
        self.assertIn("heartbeat='/srv/myapp/var/heartbeat'", code)
        os.mkdir(self.path('var'))
        result = self.run_worker(
            'myapp_runner', code.replace('/srv/myapp', self.dir),
            'myapp_runner:work', '--ticks', '0', '--max-ticks', '2')
        self.assertEqual(75, result.returncode, result.stderr)
        self.assertIn('Worker work reached max_ticks (2), stopping.',
                      result.stdout)
        self.assertTrue(os.path.exists(self.path('var', 'heartbeat')))

    def test_limits(self):
        code = readme_block('import gocept.runner', howto('limits'))
        self.assertIn('max_runtime=24 * 3600', code)
        result = self.run_worker(
            'myapp_runner', code, 'myapp_runner:work', '--ticks', '0',
            '--max-runtime', '0.1')
        self.assertEqual(75, result.returncode, result.stderr)
        self.assertIn('Worker work reached max_runtime (0.1), stopping.',
                      result.stdout)


class ReadmeLinksTest(unittest.TestCase):
    """README's links into the docs name pages that exist."""

    def test_links(self):
        if not os.path.isdir(HOWTO):
            self.skipTest('docs/ is not beside the package (no checkout)')
        with open(README) as f:
            pages = re.findall(
                r'https://gocept-runner\.readthedocs\.io/en/latest/'
                r'([\w/-]+)\.html', f.read())
        self.assertIn('tutorial', pages)
        for page in pages:
            self.assertTrue(
                os.path.exists(os.path.join(CHECKOUT, 'docs', f'{page}.rst')),
                page)


class RelStorageGuideTest(DocsTest):

    def test_without_import_the_section_is_unknown(self):
        # As the guide says; with the %import, test_relstorage runs the
        # guide's sections against a PostgreSQL server.
        with open(howto('relstorage')) as f:
            self.assertIn("(``unknown type name: 'relstorage'``)", f.read())
        zodb = readme_block('%import relstorage', howto('relstorage'))
        self.write('site.zcml', '')
        path = self.write('zope.conf', (
            'site-definition site.zcml\n'
            + zodb.replace('%import relstorage\n', '')
            + gocept.runner.testing.LOG_TO_STDOUT))
        with self.assertRaises(gocept.runner.config.ConfigurationError) as e:
            gocept.runner.config.load(path)
        self.assertIn("line 3: unknown type name: 'relstorage'",
                      str(e.exception))
