"""What happens when the storage is gone.

A tick that finds the storage unavailable (a ZEO server that went away, the
PostgreSQL server of a RelStorage out of reach, a full disk) is aborted like
any failed tick, but it is not the worker's fault: the loop logs one WARNING
when the outage begins, tries again after a pause that doubles from
OUTAGE_PAUSE's first value to its last, and logs at INFO when the storage is
back.  A stop signal ends the loop at once, outage or not.
"""

import logging
import sys
import time

from gocept.runner.filestorage import disk_full
from gocept.runner.middleware import Middleware
from gocept.runner.retry import Backoff


log = logging.getLogger('gocept.runner.runner')

# First and longest pause (seconds) between ticks while the storage is
# unavailable.
OUTAGE_PAUSE = (0.1, 30)


def unavailable(error):
    """Whether `error` says that the storage is unavailable.

    That is a disconnected ZEO client, a PostgreSQL server out of reach or a
    full disk (or quota), which go away by themselves; not a failing or
    read-only disk, which do not.
    """
    if disk_full(error):
        return True
    # ZEO (an optional extra) is imported by the time one of its storages
    # fails; importing it here would slow down every runner's start-up.
    zeo = sys.modules.get('ZEO.Exceptions')
    if zeo is not None and isinstance(error, zeo.ClientDisconnected):
        return True
    if _lost_postgresql(error):
        return True
    return False


class Outage(Middleware):
    """Backs off while the storage is unavailable."""

    def __init__(self):
        # The pauses before the next ticks, while the storage is unavailable.
        self.pauses = Backoff(*OUTAGE_PAUSE)
        # When the outage began (time.monotonic()), None while the storage
        # is available; the seconds of the outages that have ended.
        self.since = None
        self.past = 0.0

    def seconds(self):
        """How many seconds the storage has been unavailable in all."""
        if self.since is None:
            return self.past
        return self.past + time.monotonic() - self.since

    def after_tick(self, loop, tick):
        if tick.outcome == 'unavailable':
            if self.since is None:
                log.warning(
                    'Storage unavailable (%s), transaction of worker %s'
                    ' aborted; trying again until it is back',
                    _describe(tick.error), loop.name)
                self.since = tick.started
            tick.pause = next(self.pauses)
        elif self.since is not None and tick.outcome in (
                'committed', 'doomed', 'conflict'):
            log.info('Storage available again, worker %s goes on', loop.name)
            self.pauses.reset()
            self.past += tick.started - self.since
            self.since = None


def _describe(error):
    # On one line: libpq's messages have several.
    text = ' '.join(str(error).split())
    return f'{type(error).__name__}: {text}' if text else type(error).__name__


# PostgreSQL's SQLSTATEs of a connection that broke or cannot be made (the
# class 08) and of a server shutting down or starting up.
POSTGRESQL_GONE = ('08', '57P01', '57P02', '57P03')
# The server's messages (they have no SQLSTATE when they refuse a new
# connection) that do not refuse it for good: starting up, shutting down, in
# recovery; too many clients.
POSTGRESQL_BUSY = ('the database system is', 'too many clients')


def _lost_postgresql(error):
    """Whether `error` says that the PostgreSQL server is out of reach."""
    # As for ZEO: both are imported if a <relstorage> is in use.
    relstorage = sys.modules.get('relstorage.storage.interfaces')
    if relstorage is not None and isinstance(
            error, relstorage.StorageDisconnectedDuringCommit):
        return True
    psycopg2 = sys.modules.get('psycopg2')
    if psycopg2 is None:
        return False
    if isinstance(error, psycopg2.InterfaceError):
        return True  # "connection already closed"
    if not isinstance(error, psycopg2.OperationalError):
        return False
    if error.pgcode is not None:
        return error.pgcode.startswith(POSTGRESQL_GONE)
    # No SQLSTATE: libpq could not connect or lost the connection.  But a
    # server that refuses us for good (no such database or role, a wrong
    # password) is a mistake in the configuration, not an outage.
    message = str(error)
    return 'FATAL:' not in message or any(
        text in message for text in POSTGRESQL_BUSY)
