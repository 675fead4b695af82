"""The documentation of gocept.runner, run as tests."""

import doctest
import os
import subprocess
import sys
import tempfile
import unittest

from gocept.runner import testing
from gocept.runner.tests.docpage import DOCS
from gocept.runner.tests.docpage import DocPageSuite


FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


class OwnProcessDocTest(unittest.TestCase):
    """A page of docs/ that loads a site ZCML of its own, which a process
    loads only once: run as a doctest in a process of its own."""

    layer = testing.DocsLayer

    def __init__(self, path):
        super().__init__()
        self.path = path

    def id(self):
        return f'{__name__}.{self.path}'

    __str__ = id

    def runTest(self):
        with tempfile.TemporaryDirectory() as directory:
            # Not in the package directory: a module there would shadow a
            # top-level one of the same name (transaction).
            result = subprocess.run(
                [sys.executable, '-c', OWN_PROCESS, self.path],
                cwd=directory, capture_output=True, text=True, timeout=300)
        self.assertEqual(0, result.returncode, result.stdout + result.stderr)


OWN_PROCESS = """\
import sys
import unittest
from gocept.runner.tests.docpage import DocPageSuite
result = unittest.TextTestRunner().run(DocPageSuite(sys.argv[1]))
sys.exit(not result.wasSuccessful())
"""


def test_suite():
    suite = unittest.TestSuite()
    if os.path.isdir(DOCS):
        # The pages of docs/ that are doctests; not where the package is
        # installed without its checkout.
        suite.addTest(DocPageSuite(
            'howto/batches.rst',
            'howto/sharing-work.rst',
            'explanation/faults.rst',
            'explanation/runtime.rst',
            'explanation/ticks.rst',
        ))
        # Those that run shell sessions, or a server.
        shell = DocPageSuite(
            'howto/console-scripts.rst',
            'howto/instance.rst',
            'howto/zeo.rst',
        )
        shell.layer = testing.DocsLayer
        suite.addTest(shell)
        suite.addTest(OwnProcessDocTest('howto/upgrading.rst'))
    suite.addTests([
        # The seed's doctest starts its runner as a program, and reads what
        # it wrote as often as the runner writes (every 0.1 s): not in a
        # layer, which -j2 runs beside another, but alone, where it reads
        # one line, as it expects.
        doctest.DocFileSuite(
            '../appmain.rst',
            optionflags=FLAGS),
        doctest.DocFileSuite(
            '../metrics.rst',
            optionflags=FLAGS),
        doctest.DocFileSuite(
            '../host.rst',
            optionflags=FLAGS),
    ])
    return suite
