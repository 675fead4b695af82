"""The zope.conf of a Zope 3 or BlueBream instance, read by a runner."""

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import gocept.runner
from gocept.runner import config
from gocept.runner import testing
from gocept.runner.testing import FTESTING_ZCML
from gocept.runner.testing import write_zope_conf


SERVERS = """\
interrupt-check-interval 200
threads 4
<server>
  type WSGI-HTTP
  address 8080
</server>
<server ftp>
  type FTP
  address 8021
</server>
<sslserver>
  type HTTPS
  address 8443
  privatekeypath etc/server.key
  certificatepath etc/server.crt
</sslserver>
<sshserver>
  type SSH
  address 8022
  hostkey etc/ssh_host_key
</sshserver>
<server empty>
</server>
<accesslog>
  <logfile>
    path STDOUT
  </logfile>
</accesslog>
"""


class InstanceTest(unittest.TestCase):

    def setUp(self):
        self.instance = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.instance)
        self.etc = self.path('etc')
        os.mkdir(self.etc)
        self.elsewhere = self.path('elsewhere')
        os.mkdir(self.elsewhere)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(self.instance)

    def path(self, *names):
        return os.path.join(self.instance, *names)

    def write_conf(self, site_zcml=FTESTING_ZCML, extra=''):
        return write_zope_conf(self.etc, site_zcml=site_zcml, extra=extra)


class SiteDefinitionTest(InstanceTest):

    def test_relative_is_found_in_the_working_directory(self):
        shutil.copy(FTESTING_ZCML, self.path('etc', 'site.zcml'))
        conf = self.write_conf('etc/site.zcml')
        self.assertEqual(self.path('etc', 'site.zcml'),
                         config.load(conf).site_definition)

    def test_working_directory_comes_before_beside_zope_conf(self):
        shutil.copy(FTESTING_ZCML, self.path('site.zcml'))
        shutil.copy(FTESTING_ZCML, self.path('etc', 'site.zcml'))
        conf = self.write_conf('site.zcml')
        self.assertEqual(self.path('site.zcml'),
                         config.load(conf).site_definition)

    def test_beside_zope_conf_if_not_in_the_working_directory(self):
        shutil.copy(FTESTING_ZCML, self.path('etc', 'site.zcml'))
        conf = self.write_conf('site.zcml')
        os.chdir(self.elsewhere)
        self.assertEqual(self.path('etc', 'site.zcml'),
                         config.load(conf).site_definition)

    def test_missing_names_both_places(self):
        conf = self.write_conf('etc/site.zcml')
        os.chdir(self.elsewhere)
        with self.assertRaises(gocept.runner.ConfigurationError) as err:
            config.load(conf)
        self.assertEqual(
            f'Cannot find the site ZCML etc/site.zcml (site-definition of'
            f' {conf}): neither {self.elsewhere}/etc/site.zcml (in the working'
            f' directory) nor {self.etc}/etc/site.zcml (beside zope.conf)'
            ' exists', str(err.exception))

    def test_missing_absolute_one_is_named(self):
        site = self.path('etc', 'site.zcml')
        conf = self.write_conf(site)
        with self.assertRaises(gocept.runner.ConfigurationError) as err:
            config.load(conf)
        self.assertEqual(
            f'Cannot find the site ZCML {site} (site-definition of {conf}):'
            f' {site} does not exist', str(err.exception))

    def test_bundled_default_conf_ignores_the_working_directory(self):
        # An unrelated minimal.zcml in the working directory, and the var
        # directory the FileStorage of default.conf needs.
        with open(self.path('minimal.zcml'), 'w') as f:
            f.write('<configure />\n')
        os.mkdir(self.path('var'))
        default_conf = os.path.join(config.HERE, 'default.conf')
        self.assertEqual(os.path.join(config.HERE, 'minimal.zcml'),
                         config.load(default_conf).site_definition)


class ServerSettingsTest(InstanceTest):

    def test_server_sections_and_settings_are_read(self):
        conf = config.load(self.write_conf(extra=SERVERS))
        self.assertEqual(
            [('server', None, 'WSGI-HTTP'), ('server', 'ftp', 'FTP'),
             ('sslserver', None, 'HTTPS'), ('sshserver', None, 'SSH'),
             ('server', 'empty', None)],
            [(s.getSectionType(), s.getSectionName(), s.settings.get('type'))
             for s in conf.servers])
        self.assertEqual((200, 4), (conf.interrupt_check_interval,
                                    conf.threads))

    def test_ignored_settings_are_logged_at_debug(self):
        conf = config.load(self.write_conf(extra=SERVERS))
        with self.assertLogs('gocept.runner.config', logging.DEBUG) as logs:
            config.ignore_server_settings(conf)
        self.assertEqual([
            'DEBUG:gocept.runner.config:Ignoring <server> (type WSGI-HTTP,'
            ' address 8080) of zope.conf: a runner serves no requests',
            'DEBUG:gocept.runner.config:Ignoring <server ftp> (type FTP,'
            ' address 8021) of zope.conf: a runner serves no requests',
            'DEBUG:gocept.runner.config:Ignoring <sslserver> (type HTTPS,'
            ' address 8443, privatekeypath etc/server.key, certificatepath'
            ' etc/server.crt) of zope.conf: a runner serves no requests',
            'DEBUG:gocept.runner.config:Ignoring <sshserver> (type SSH,'
            ' address 8022, hostkey etc/ssh_host_key) of zope.conf: a runner'
            ' serves no requests',
            'DEBUG:gocept.runner.config:Ignoring <server empty> of zope.conf:'
            ' a runner serves no requests',
            'DEBUG:gocept.runner.config:Ignoring interrupt-check-interval 200'
            ' of zope.conf: a setting of Zope 3 servers',
            'DEBUG:gocept.runner.config:Ignoring threads 4 of zope.conf: a'
            ' setting of Zope 3 servers',
        ], logs.output)

    def test_nothing_is_logged_without_server_settings(self):
        conf = config.load(self.write_conf())
        with self.assertNoLogs('gocept.runner.config', logging.DEBUG):
            config.ignore_server_settings(conf)

    def test_threads_must_be_a_number_as_in_zope_3(self):
        conf = self.write_conf(extra='threads many\n')
        with self.assertRaises(gocept.runner.ConfigurationError) as err:
            config.load(conf)
        self.assertIn(f'{conf}, line 13', str(err.exception))
        self.assertIn('many', str(err.exception))


class PathTest(InstanceTest):

    def setUp(self):
        super().setUp()
        saved = sys.path[:]
        self.addCleanup(sys.path.__setitem__, slice(None), saved)

    def test_entries_go_to_the_front_in_their_order(self):
        before = sys.path[:]
        conf = config.load(self.write_conf(
            extra=f'path lib/python\npath {self.elsewhere}\n'))
        config.configure_path(conf)
        self.assertEqual(
            [self.path('lib', 'python'), self.elsewhere, *before], sys.path)

    def test_relative_entries_are_relative_to_the_working_directory(self):
        conf = config.load(self.write_conf(extra='path src\n'))
        os.chdir(self.elsewhere)
        config.configure_path(conf)
        self.assertEqual(os.path.join(self.elsewhere, 'src'), sys.path[0])

    def test_a_second_time_does_not_add_them_again(self):
        before = sys.path[:]
        conf = config.load(self.write_conf(extra='path src\n'))
        config.configure_path(conf)
        config.configure_path(conf)
        self.assertEqual([self.path('src'), *before], sys.path)


class LoggerTest(InstanceTest):

    def test_logger_without_handlers_sets_level_and_propagation(self):
        name = 'gocept.runner.tests.quiet'
        logger = logging.getLogger(name)
        self.addCleanup(setattr, logger, 'propagate', True)
        self.addCleanup(logger.setLevel, logging.NOTSET)
        conf = config.load(write_zope_conf(
            self.etc, log='<eventlog>\n</eventlog>\n',
            extra=f'<logger>\n  name {name}\n  level warning\n'
                  '  propagate false\n</logger>\n'))
        config.configure_logging(conf)
        self.assertEqual(logging.WARNING, logger.level)
        self.assertFalse(logger.propagate)
        self.assertEqual([], logger.handlers)


DEVMODE_SITE = """\
<configure xmlns="http://namespaces.zope.org/zope"
           xmlns:zcml="http://namespaces.zope.org/zcml">
  <include package="gocept.runner" file="minimal.zcml" />
  <utility component="gocept.runner.tests.test_instance_conf.DEVMODE"
           provides="zope.interface.Interface" name="devmode"
           zcml:condition="have devmode" />
</configure>
"""

DEVMODE = 'registered in devmode'

# Loads the site ZCML of the zope.conf given as argument the way a runner
# does and prints what it registered only in devmode.
PROGRAM = """\
import sys
import zope.component
import zope.interface
from gocept.runner import environment
with environment.application(sys.argv[1]):
    print(zope.component.queryUtility(zope.interface.Interface, 'devmode'))
"""


class DevmodeTest(InstanceTest):
    """The site ZCML loaded in a process of its own."""

    layer = testing.SubprocessLayer

    def run_program(self, devmode):
        with open(self.path('etc', 'site.zcml'), 'w') as f:
            f.write(DEVMODE_SITE)
        conf = self.write_conf(
            'etc/site.zcml', extra=f'devmode {devmode}\n')
        result = subprocess.run(
            [sys.executable, '-c', PROGRAM, conf], cwd=self.instance,
            capture_output=True, text=True, timeout=60)
        self.assertEqual(0, result.returncode, result.stderr)
        return result.stdout

    def test_devmode_on_loads_the_site_zcml_with_the_devmode_feature(self):
        self.assertEqual(f'{DEVMODE}\n', self.run_program('on'))

    def test_devmode_off_loads_it_without(self):
        self.assertEqual('None\n', self.run_program('off'))

    def test_a_second_load_with_other_features_is_refused(self):
        site = self.path('etc', 'site.zcml')
        with open(site, 'w') as f:
            f.write(DEVMODE_SITE)
        result = subprocess.run(
            [sys.executable, '-c', LOAD_TWICE, site],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(
            f'This process has loaded the site ZCML {site} with the features'
            f' none; it cannot load it with devmode as well\n',
            result.stdout, result.stderr)


LOAD_TWICE = """\
import sys
from gocept.runner import config
from gocept.runner import environment
environment.load_zcml(sys.argv[1])
environment.load_zcml(sys.argv[1])
try:
    environment.load_zcml(sys.argv[1], ['devmode'])
except config.ConfigurationError as e:
    print(e)
"""
