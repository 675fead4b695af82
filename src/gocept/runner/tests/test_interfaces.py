"""The exceptions: one module has them all, the old places still do."""

import pickle
import traceback
import unittest

import gocept.runner
import gocept.runner.config
import gocept.runner.environment
import gocept.runner.filestorage
import gocept.runner.lock
from gocept.runner import interfaces


# Each exception, where code imports it from and the name it is shown by.
PLACES = {
    'ConfigurationError': (gocept.runner.config, gocept.runner),
    'MissingProductConfiguration': (gocept.runner.config,),
    'UnknownSite': (gocept.runner.environment,),
    'DamagedFile': (gocept.runner.filestorage,),
    'NotALockFile': (gocept.runner.lock,),
    'AlreadyRunning': (gocept.runner.lock,),
}


class ExceptionsTest(unittest.TestCase):

    def test_every_exception_is_in_interfaces(self):
        defined = {name for name, value in vars(interfaces).items()
                   if isinstance(value, type) and
                   issubclass(value, Exception)}
        self.assertEqual(set(PLACES), defined)

    def test_the_old_places_have_the_same_classes(self):
        for name, modules in PLACES.items():
            for module in modules:
                self.assertIs(getattr(interfaces, name),
                              getattr(module, name), module.__name__)

    def test_shown_and_pickled_under_the_module_that_raised_them(self):
        for name, modules in PLACES.items():
            error = getattr(interfaces, name)('the problem')
            self.assertEqual(
                f'{modules[0].__name__}.{name}: the problem\n',
                traceback.format_exception_only(error)[-1])
            copy = pickle.loads(pickle.dumps(error))
            self.assertIs(type(error), type(copy))

    def test_the_key_errors_are_shown_without_quotes(self):
        for name in 'MissingProductConfiguration', 'UnknownSite':
            error = getattr(interfaces, name)('no such key')
            self.assertIsInstance(error, KeyError)
            self.assertEqual('no such key', str(error))
