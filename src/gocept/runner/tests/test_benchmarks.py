"""The scripts of benchmarks/ start: none shadows a module it imports (a
script's folder comes first on its sys.path), and each that takes options
prints its help.  The benchmarks themselves are run by hand."""

import glob
import importlib.util
import os
import subprocess
import sys
import unittest

import gocept.runner


BENCHMARKS = os.path.normpath(os.path.join(
    os.path.dirname(gocept.runner.__file__), '..', '..', '..', 'benchmarks'))


def scripts():
    return sorted(glob.glob(os.path.join(BENCHMARKS, '*.py')))


@unittest.skipUnless(os.path.isdir(BENCHMARKS), 'not run from a checkout')
class BenchmarkScriptsTest(unittest.TestCase):

    def test_no_script_shadows_an_installed_module(self):
        shadowing = []
        for path in scripts():
            name = os.path.splitext(os.path.basename(path))[0]
            if importlib.util.find_spec(name) is not None:
                shadowing.append(name)
        self.assertEqual([], shadowing)

    def test_scripts_with_options_print_their_help(self):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        for path in scripts():
            with open(path) as f:
                if 'ArgumentParser(' not in f.read():
                    continue
            with self.subTest(os.path.basename(path)):
                result = subprocess.run(
                    [sys.executable, path, '--help'], env=env,
                    capture_output=True, text=True, timeout=60)
                self.assertEqual(0, result.returncode, result.stderr)
                self.assertIn('usage:', result.stdout)


ROOT = os.path.dirname(BENCHMARKS)


@unittest.skipUnless(os.path.isdir(BENCHMARKS), 'not run from a checkout')
class BenchmarkResultsTest(unittest.TestCase):

    def test_the_sdist_has_every_result_the_docs_include(self):
        # The docs are in the sdist (graft docs), and build from it.
        included = set()
        for path in glob.glob(os.path.join(ROOT, 'docs', '**', '*.rst'),
                              recursive=True):
            with open(path) as f:
                for line in f:
                    words = line.split()
                    if words[:2] == ['..', 'literalinclude::'] and (
                            'benchmarks/' in words[2]):
                        included.add('benchmarks/' + words[2].split(
                            'benchmarks/', 1)[1])
        with open(os.path.join(ROOT, 'MANIFEST.in')) as f:
            manifest = {line.split()[1] for line in f
                        if line.startswith('include ')}
        self.assertTrue(included)
        self.assertEqual([], sorted(included - manifest))
