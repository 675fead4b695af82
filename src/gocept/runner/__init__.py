"""Run small, long-running scripts against a ZODB, with Zope set up."""

from gocept.runner import environment
from gocept.runner import runner
from gocept.runner.config import ConfigurationError
from gocept.runner.config import from_config
from gocept.runner.decorators import appmain
from gocept.runner.decorators import once
from gocept.runner.peritem import transaction_per_item
from gocept.runner.runner import Exit
from gocept.runner.runner import MainLoop


# gocept.runner 3.x had these in its module gocept.runner.runner, and code
# written for it imports them from there.  They are set here, above all
# modules of the package, so that no module imports one above it.
runner.appmain = appmain
runner.once = once
runner.from_config = from_config
runner.init = environment.init


__all__ = [
    'ConfigurationError',
    'Exit',
    'MainLoop',
    'appmain',
    'from_config',
    'once',
    'transaction_per_item',
]
