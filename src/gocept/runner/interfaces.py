"""The contracts of gocept.runner, and every exception it raises.

Each exception is also importable from the module that has always raised
it, and is printed under that module's name (in tracebacks, log lines and
doctests): ``gocept.runner.config.ConfigurationError``, say.
"""


class ConfigurationError(Exception):
    """The runner cannot start: zope.conf, the site ZCML, the database, the
    site or the principal is not what it needs.

    The message names the problem (and the file and line where there is one).
    A program turns it into one line on stderr and exit status 2, or 1 when
    what it says may pass by itself (a storage server that is down).
    """

    __module__ = 'gocept.runner.config'


class MissingProductConfiguration(ConfigurationError, KeyError):
    """zope.conf has not the ``<product-config>`` section or key asked for.
    """

    __module__ = 'gocept.runner.config'
    __str__ = ConfigurationError.__str__


class UnknownSite(ConfigurationError, KeyError):
    """The root folder has no item of the name given as site."""

    __module__ = 'gocept.runner.environment'
    __str__ = ConfigurationError.__str__


class DamagedFile(ConfigurationError):
    """A FileStorage is damaged: a person must repair it."""

    __module__ = 'gocept.runner.filestorage'


class NotALockFile(ConfigurationError):
    """The lock file path names a file that holds something else."""

    __module__ = 'gocept.runner.lock'


class AlreadyRunning(Exception):
    """Another process holds the lock file of the run, or its database.

    A program exits with status 75: a supervisor tries again later.
    """

    __module__ = 'gocept.runner.lock'
