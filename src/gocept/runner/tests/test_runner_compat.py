"""gocept.runner 3.x's names on gocept.runner.runner, where its code
imports them from."""

import subprocess
import sys
import unittest

import gocept.runner
import gocept.runner.config
import gocept.runner.environment
import gocept.runner.runner
import gocept.runner.security


class RunnerModuleTest(unittest.TestCase):

    def test_the_3x_names_are_the_current_objects(self):
        runner = gocept.runner.runner
        self.assertIs(gocept.runner.appmain, runner.appmain)
        self.assertIs(gocept.runner.once, runner.once)
        self.assertIs(gocept.runner.config.from_config, runner.from_config)
        self.assertIs(gocept.runner.environment.init, runner.init)
        self.assertIs(gocept.runner.Exit, runner.Exit)
        self.assertIs(gocept.runner.MainLoop, runner.MainLoop)
        self.assertIs(gocept.runner.security.RunnerRequest,
                      runner.RunnerRequest)

    def test_they_come_from_the_module_not_from_the_package(self):
        # Not set into the module by the package's __init__: the module
        # answers for them itself, also before anything else is imported.
        self.assertNotIn('appmain', vars(gocept.runner.runner))
        result = subprocess.run(
            [sys.executable, '-c',
             'from gocept.runner.runner import appmain, once, from_config,'
             ' init; print(appmain.__module__, init.__module__)'],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(
            'gocept.runner.decorators gocept.runner.environment\n',
            result.stdout, result.stderr)

    def test_an_unknown_name_is_an_attribute_error(self):
        with self.assertRaises(AttributeError) as raised:
            gocept.runner.runner.no_such_name
        self.assertIn("has no attribute 'no_such_name'",
                      str(raised.exception))
