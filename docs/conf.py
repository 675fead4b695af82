"""Sphinx configuration of gocept.runner's documentation.

Build it with ``tox -e docs`` (or ``sphinx-build -W -n docs
docs/_build/html`` with the ``docs`` extra installed).  Nothing is fetched
from the network: no intersphinx, and the theme brings its own assets.
"""

import importlib.metadata
import os
import sys


# argparsers.py and exitstatuses.py, beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


# The help of -C/--config tells what this variable names, if it is set.
os.environ.pop('GOCEPT_RUNNER_CONFIG', None)

project = 'gocept.runner'
author = 'gocept gmbh & co. kg'
copyright = 'gocept gmbh & co. kg, Zope Public License 2.1'
release = importlib.metadata.version('gocept.runner')
version = release

extensions = [
    'exitstatuses',
    'sphinx.ext.autodoc',
    'sphinxarg.ext',
]

exclude_patterns = ['_build']
# Warnings are errors, and so is every reference that points nowhere.
nitpicky = True
# Names of Python and of other libraries, which have no inventory here.
nitpick_ignore_regex = [
    ('py:class', r'(Exception|KeyError|object|argparse\..*)'),
    ('py:class', r'(zc|zope|ZODB|transaction)\..*'),
]

autodoc_member_order = 'bysource'

html_theme = 'furo'
html_title = f'gocept.runner {release}'
smartquotes_action = 'qe'  # '--' stays two hyphens (options)
