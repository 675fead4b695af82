"""Reading zope.conf: validation, errors and logging."""

import logging
import os
import shutil
import tempfile
import unittest

import gocept.runner
from gocept.runner import config
from gocept.runner.testing import FTESTING_ZCML
from gocept.runner.testing import write_zope_conf


class LoadTest(unittest.TestCase):

    def setUp(self):
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)

    def write(self, text):
        path = os.path.join(self.directory, 'zope.conf')
        with open(path, 'w') as f:
            f.write(text)
        return path

    def write_bytes(self, data):
        path = os.path.join(self.directory, 'zope.conf')
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def assertError(self, path, *parts):
        with self.assertRaises(gocept.runner.ConfigurationError) as err:
            config.load(path)
        for part in parts:
            self.assertIn(part, str(err.exception))

    def test_missing_file(self):
        path = os.path.join(self.directory, 'nothere.conf')
        self.assertError(path, 'Configuration file not found', path)

    def test_unreadable_file(self):
        if os.getuid() == 0:
            self.skipTest('root reads every file')
        path = write_zope_conf(self.directory)
        os.chmod(path, 0)
        self.assertError(path, 'Cannot read configuration file', path)

    def test_syntax_error_names_file_and_line(self):
        path = self.write(
            f'site-definition {FTESTING_ZCML}\n<zodb>\n  <filestorage>\n')
        self.assertError(path, path, 'line 3')

    def test_unknown_key_names_file_and_line(self):
        path = write_zope_conf(self.directory, extra='no-such-key 1\n')
        self.assertError(path, path, 'no-such-key', 'line 13')

    def test_eventlog_is_required(self):
        path = write_zope_conf(self.directory, log='')
        self.assertError(path, path, 'eventlog')

    def test_a_python_caller_gets_one_exception_without_a_chain(self):
        # ZConfig's own exceptions say no more than the message.
        for path in (
                write_zope_conf(self.directory, log=''),
                self.write(f'site-definition {FTESTING_ZCML}\n<zodb>\n'),
                self.write_bytes(b'site-definition \xff\n')):
            with self.subTest(path=path):
                with self.assertRaises(
                        gocept.runner.ConfigurationError) as error:
                    config.load(path)
                # What a traceback shows of the chain (zope.testrunner
                # changes the formatting of tracebacks, so not that).
                self.assertIsNone(error.exception.__cause__)
                self.assertTrue(error.exception.__suppress_context__)

    def test_accesslog_is_accepted_and_goes_to_accesslog_logger(self):
        log_file = os.path.join(self.directory, 'access.log')
        path = write_zope_conf(
            self.directory, log='<eventlog>\n</eventlog>\n',
            extra=f'<accesslog>\n  <logfile>\n    path {log_file}\n'
                  '  </logfile>\n</accesslog>\n')
        conf = config.load(path)
        config.configure_logging(conf)
        logger = logging.getLogger('accesslog')
        self.addCleanup(remove_handlers, 'accesslog')
        self.assertFalse(logger.propagate)
        logger.info('GET /')
        for handler in logger.handlers:
            handler.flush()
        with open(log_file) as f:
            self.assertIn('GET /', f.read())

    def test_file_of_gocept_runner_3_without_accesslog_is_accepted(self):
        path = write_zope_conf(
            self.directory,
            extra='<product-config test>\n  foo bar\n</product-config>\n')
        conf = config.load(path)
        self.assertIsNone(conf.accesslog)
        config.configure_products(conf)
        self.assertEqual('bar', config.from_config('test', 'foo')())

    def test_relative_site_definition_is_found_beside_zope_conf(self):
        shutil.copy(FTESTING_ZCML, os.path.join(self.directory, 'site.zcml'))
        path = write_zope_conf(self.directory, site_zcml='site.zcml')
        self.assertEqual(os.path.join(self.directory, 'site.zcml'),
                         config.load(path).site_definition)

    def test_from_config_names_missing_section_and_key(self):
        path = write_zope_conf(
            self.directory,
            extra='<product-config test>\n  foo bar\n</product-config>\n')
        config.configure_products(config.load(path))
        with self.assertRaises(KeyError) as err:
            config.from_config('nosection', 'foo')()
        self.assertIn('no <product-config nosection>', str(err.exception))
        with self.assertRaises(KeyError) as err:
            config.from_config('test', 'nokey')()
        self.assertIn("<product-config test> has no key 'nokey'",
                      str(err.exception))


class InstanceConfTest(unittest.TestCase):
    """Telling the zope.conf of a Zope 4+ instance from one of Zope 3."""

    def setUp(self):
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)

    def is_instance_conf(self, text):
        path = os.path.join(self.directory, 'zope.conf')
        with open(path, 'w') as f:
            f.write(text)
        return config.is_instance_conf(path)

    def test_instancehome_in_a_line_of_its_own_tells_an_instance(self):
        self.assertTrue(self.is_instance_conf(
            '%define INSTANCE /srv/zope\ninstancehome $INSTANCE\n'))
        self.assertTrue(self.is_instance_conf('  InstanceHome /srv/zope\n'))

    def test_any_other_file_is_read_as_zope_3(self):
        with open(write_zope_conf(self.directory)) as f:
            self.assertFalse(self.is_instance_conf(f.read()))
        self.assertFalse(self.is_instance_conf(
            '# instancehome /srv/zope\n<zodb_db main>\n</zodb_db>\n'))
        self.assertFalse(self.is_instance_conf(
            'instancehomes /srv/zope\n'))
        self.assertFalse(self.is_instance_conf(''))

    def test_a_file_that_cannot_be_read_is_not_an_instance_conf(self):
        self.assertFalse(config.is_instance_conf(
            os.path.join(self.directory, 'nothere.conf')))
        self.assertFalse(config.is_instance_conf(self.directory))


class LoggingTest(unittest.TestCase):

    def setUp(self):
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)
        self.log_file = os.path.join(self.directory, 'event.log')
        log = (f'<eventlog>\n  <logfile>\n    path {self.log_file}\n'
               '    format %(message)s\n  </logfile>\n</eventlog>\n')
        self.conf = config.load(write_zope_conf(self.directory, log=log))
        self.addCleanup(remove_handlers, None)

    def test_second_configuration_replaces_handlers_of_first(self):
        config.configure_logging(self.conf)
        config.configure_logging(self.conf)
        logging.getLogger('test').warning('once')
        with open(self.log_file) as f:
            self.assertEqual('once\n', f.read())

    def test_logger_sections_configure_named_loggers(self):
        log_file = os.path.join(self.directory, 'zodb.log')
        conf = config.load(write_zope_conf(
            self.directory, log='<eventlog>\n</eventlog>\n',
            extra=f'<logger>\n  name gocept.runner.test\n  level debug\n'
                  f'  propagate false\n  <logfile>\n    path {log_file}\n'
                  '    format %(levelname)s %(message)s\n  </logfile>\n'
                  '</logger>\n'))
        config.configure_logging(conf)
        logger = logging.getLogger('gocept.runner.test')
        self.addCleanup(remove_handlers, 'gocept.runner.test')
        logger.debug('detail')
        for handler in logger.handlers:
            handler.flush()
        self.assertFalse(logger.propagate)
        with open(log_file) as f:
            self.assertEqual('DEBUG detail\n', f.read())

    def test_eventlog_without_handlers_leaves_logging_alone(self):
        config.configure_logging(self.conf)
        empty = config.load(write_zope_conf(
            self.directory, log='<eventlog>\n  level error\n</eventlog>\n'))
        config.configure_logging(empty)
        logging.getLogger('test').warning('still here')
        with open(self.log_file) as f:
            self.assertEqual('still here\n', f.read())


def remove_handlers(name):
    """Remove the handlers configure_logging installed on logger `name`."""
    logger = logging.getLogger(name)
    for handler in config._handlers.pop(name, ()):
        logger.removeHandler(handler)
        handler.close()
