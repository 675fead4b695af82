"""The pages of docs/ about jobs, run as doctests."""

import os
import unittest

from gocept.runner import testing
from gocept.runner.tests.docpage import DOCS
from gocept.runner.tests.docpage import DocPageSuite


def test_suite():
    suite = unittest.TestSuite()
    if os.path.isdir(DOCS):
        # Not where the package is installed without its checkout.
        suite.addTest(DocPageSuite('explanation/exactly-once.rst'))
        # It runs workers in a shell session.
        reference = DocPageSuite('reference/jobs.rst')
        reference.layer = testing.DocsLayer
        suite.addTest(reference)
        schedules = DocPageSuite('howto/schedules.rst')
        schedules.layer = testing.DocsLayer
        suite.addTest(schedules)
    return suite
