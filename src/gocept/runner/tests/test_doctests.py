"""The documentation of gocept.runner, run as tests."""

import doctest
import unittest


FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def test_suite():
    return unittest.TestSuite([
        doctest.DocFileSuite(
            '../appmain.rst',
            '../mainloop.rst',
            '../once.rst',
            '../production.rst',
            '../transaction.rst',
            optionflags=FLAGS),
        doctest.DocFileSuite(
            '../commandline.rst',
            optionflags=FLAGS),
        doctest.DocFileSuite(
            '../instance.rst',
            optionflags=FLAGS),
        doctest.DocFileSuite(
            '../zeo.rst',
            optionflags=FLAGS),
    ])
