"""What happens when the storage is gone.

A tick that finds the storage unavailable (a ZEO server that went away, a
full disk) is aborted like any failed tick, but it is not the worker's
fault: the loop logs one WARNING when the outage begins, tries again after a
pause that doubles from OUTAGE_PAUSE's first value to its last, and logs at
INFO when the storage is back.  A stop signal ends the loop at once, outage
or not.
"""

import logging
import sys

from gocept.runner.filestorage import disk_full
from gocept.runner.middleware import Middleware


log = logging.getLogger('gocept.runner.runner')

# First and longest pause (seconds) between ticks while the storage is
# unavailable.
OUTAGE_PAUSE = (0.1, 30)


def unavailable(error):
    """Whether `error` says that the storage is unavailable.

    That is a disconnected ZEO client or a full disk (or quota), which go
    away by themselves; not a failing or read-only disk, which do not.
    """
    if disk_full(error):
        return True
    # ZEO (an optional extra) is imported by the time one of its storages
    # fails; importing it here would slow down every runner's start-up.
    zeo = sys.modules.get('ZEO.Exceptions')
    return zeo is not None and isinstance(error, zeo.ClientDisconnected)


class Outage(Middleware):
    """Backs off while the storage is unavailable."""

    def __init__(self):
        # The pause before the next tick, while the storage is unavailable.
        self.pause = None

    def after_tick(self, loop, tick):
        if tick.outcome == 'unavailable':
            if self.pause is None:
                log.warning(
                    'Storage unavailable (%s), transaction of worker %s'
                    ' aborted; trying again until it is back',
                    _describe(tick.error), loop.name)
                self.pause = OUTAGE_PAUSE[0]
            else:
                self.pause = min(2 * self.pause, OUTAGE_PAUSE[1])
            tick.pause = self.pause
        elif self.pause is not None and tick.outcome in (
                'committed', 'doomed', 'conflict'):
            log.info('Storage available again, worker %s goes on', loop.name)
            self.pause = None


def _describe(error):
    text = str(error)
    return f'{type(error).__name__}: {text}' if text else type(error).__name__
