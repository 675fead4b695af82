"""The documentation of gocept.runner, run as tests."""

import doctest
import os
import subprocess
import sys
import tempfile
import unittest

from gocept.runner.tests.docpage import DOCS
from gocept.runner.tests.docpage import DocPageSuite


FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class OwnProcessDocTest(unittest.TestCase):
    """A doctest that loads a site ZCML of its own, which a process loads
    only once: run as ``python -m doctest`` in a process of its own."""

    def __init__(self, filename):
        super().__init__()
        self.filename = filename

    def id(self):
        return f'{__name__}.{self.filename}'

    __str__ = id

    def runTest(self):
        with tempfile.TemporaryDirectory() as directory:
            # Not in the package directory: a module there would shadow a
            # top-level one of the same name (transaction).
            result = subprocess.run(
                [sys.executable, '-m', 'doctest', '-o', 'ELLIPSIS',
                 '-o', 'NORMALIZE_WHITESPACE',
                 os.path.join(HERE, self.filename)],
                cwd=directory, capture_output=True, text=True, timeout=300)
        self.assertEqual(0, result.returncode, result.stdout + result.stderr)


def test_suite():
    suite = unittest.TestSuite()
    if os.path.isdir(DOCS):
        # The pages of docs/ that are doctests; not where the package is
        # installed without its checkout.
        suite.addTest(DocPageSuite(
            'howto/batches.rst',
            'howto/console-scripts.rst',
            'howto/instance.rst',
            'howto/sharing-work.rst',
            'howto/zeo.rst',
            'explanation/faults.rst',
            'explanation/ticks.rst',
        ))
    suite.addTests([
        doctest.DocFileSuite(
            '../appmain.rst',
            optionflags=FLAGS),
        doctest.DocFileSuite(
            '../metrics.rst',
            optionflags=FLAGS),
        doctest.DocFileSuite(
            '../host.rst',
            optionflags=FLAGS),
        OwnProcessDocTest('upgrading.rst'),
    ])
    return suite
