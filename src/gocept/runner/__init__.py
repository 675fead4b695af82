"""Run small, long-running scripts against a ZODB, with Zope set up."""

from gocept.runner.config import ConfigurationError
from gocept.runner.config import from_config
from gocept.runner.decorators import appmain
from gocept.runner.decorators import once
from gocept.runner.peritem import transaction_per_item
from gocept.runner.runner import Exit
from gocept.runner.runner import MainLoop


__all__ = [
    'ConfigurationError',
    'Exit',
    'MainLoop',
    'appmain',
    'from_config',
    'once',
    'transaction_per_item',
]
