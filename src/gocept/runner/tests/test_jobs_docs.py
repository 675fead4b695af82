"""The pages of docs/ about jobs, run as doctests."""

import os
import unittest

from gocept.runner.tests.docpage import DOCS
from gocept.runner.tests.docpage import DocPageSuite


def test_suite():
    suite = unittest.TestSuite()
    if os.path.isdir(DOCS):
        # Not where the package is installed without its checkout.
        suite.addTest(DocPageSuite(
            'reference/jobs.rst',
            'explanation/exactly-once.rst',
        ))
    return suite
