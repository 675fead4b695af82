"""One tick: the worker called in a transaction of its own.

A tick begins a transaction, calls the worker and commits (through
gocept.runner.retry, which tries a conflict again); its `outcome` says how
that went, and what went wrong is logged here.
"""

import logging
import math
import numbers
import time

import transaction
from ZODB.POSException import ConflictError

from gocept.runner import forks
from gocept.runner import outage
from gocept.runner import peritem
from gocept.runner import retry
from gocept.runner import signals


# The loop's logger: these lines are the ones the first gocept.runner
# wrote, and documents and log filters name it.
log = logging.getLogger('gocept.runner.runner')


class _Exit:
    """A worker returns ``gocept.runner.Exit`` to end the main loop."""

    def __repr__(self):
        return 'gocept.runner.Exit'


Exit = _Exit()

# The longest pause between two ticks (seconds): a year.  A longer one, or
# one that is not a number of seconds at all, is a worker's mistake.
MAX_PAUSE = 365 * 24 * 3600

# What a tick's `outcome` may be.
OUTCOMES = ('committed', 'doomed', 'error', 'conflict', 'unavailable',
            'aborted')


class Tick:
    """One call of a loop's worker and its transaction.

    `outcome` is one of 'committed', 'doomed' (the worker doomed the
    transaction, which was aborted), 'error' (the worker or the commit
    failed), 'conflict' (after the retries), 'unavailable' (the storage),
    'aborted' (by SystemExit or KeyboardInterrupt).  `items` counts what
    transaction_per_item did in it (a peritem.Collector).
    """

    # What a tick has until it is set: an instance stores only what
    # changes (each attribute set in __init__ cost every tick 30 ns).
    outcome = error = result = ended = None
    # How many conflicts were retried; how many there were in all.
    retried = conflicts = 0
    # Seconds to sleep before the next tick.
    pause = 0
    _returned = _doomed = False

    def __init__(self, number):
        self.number = number
        self.items = peritem.Collector()
        # When the tick began and ended (time.monotonic()).
        self.started = time.monotonic()

    def run(self, loop, steps=None):
        """Call the worker of `loop` with the loop's steps `begin`,
        `commit` and `abort` (`steps`: the loop's Steps, if it has them at
        hand); set the outcome, the result and the pause."""
        own = steps is None
        if own:
            steps = Steps(loop)
        items = self.items
        steps.tick = self
        steps.collectors.append(items)
        try:
            # The arguments by position: by keyword they cost every tick
            # 0.1 µs.
            self.result, self.retried = retry.run(
                steps.call, retry.ATTEMPTS, steps.begin, steps.commit,
                steps.abort, steps.may_retry, steps.failed)
        except (SystemExit, KeyboardInterrupt) as e:
            self.outcome, self.error = 'aborted', e
            loop.exit_code = getattr(e, 'code', None)
            loop.stop(type(e).__name__)
        except BaseException as e:
            self.error, self.pause = e, loop.ticks
            self.outcome = self._log(e, loop.name)
        else:
            self.outcome = 'doomed' if self._doomed else 'committed'
            if self.result is Exit:
                loop.stop('Exit')
            else:
                self.pause = (loop.ticks if self.result is None
                              else self._pause(loop))
        finally:
            steps.collectors.remove(items)
            steps.tick = None
            if own:
                steps.close()
        self.ended = time.monotonic()
        if log.isEnabledFor(logging.DEBUG):
            log.debug('Tick %s of worker %s: %s in %.3f s', self.number,
                      loop.name, self.describe(), self.ended - self.started)

    def _pause(self, loop):
        """The seconds to sleep after the worker returned `result` (see
        pause_after); a mistake is logged at WARNING once per loop and
        kind."""
        seconds, mistake = pause_after(self.result, loop.ticks)
        if mistake is not None:
            loop.warn_once(
                ('result', mistake), 'Worker %s returned %r, which is %s;'
                ' sleeping %s seconds', loop.name, self.result, mistake,
                seconds)
        return seconds

    def _log(self, error, name):
        """Log why the tick failed; return its outcome."""
        if outage.unavailable(error):
            return 'unavailable'  # the Outage middleware logs it
        if isinstance(error, ConflictError):
            if self.items.committed:
                log.warning(
                    'Conflict in worker %s, transaction aborted and not'
                    ' tried again: items of transaction_per_item committed'
                    ' in it: %s', name, error)
            else:
                log.warning('Conflict in worker %s, transaction aborted after'
                            ' %s attempts: %s', name, retry.ATTEMPTS, error)
            return 'conflict'
        if self._returned:
            log.exception('Error committing the transaction of worker %s',
                          name)
        else:
            log.exception('Error in worker %s, transaction aborted', name)
        return 'error'

    def describe(self):
        """The outcome in words, for the tick's line at DEBUG."""
        if self.outcome == 'committed' and self.retried:
            return f'committed after {self.retried} conflicts'
        if self.outcome == 'unavailable':
            return 'storage unavailable'
        if self.outcome == 'aborted':
            return f'aborted by {type(self.error).__name__}'
        return self.outcome


class Steps:
    """What the ticks of `loop` call through retry.run: the loop's
    `begin`, `commit` and `abort`, and its worker (`call`); made once for
    a run of the loop, and given to each Tick it runs (as `tick`).

    Bound methods or closures made for every tick cost it 0.2 µs each,
    as `with` would for the tick's Collector, which is put among the
    thread's `collectors` instead (benchmarks/profile_ticks.py).  `close`
    unbinds them all at the end of the run: they hold the loop, which
    holds its Steps.
    """

    def __init__(self, loop):
        self.loop = loop
        self.tick = None
        self.collectors = peritem.collectors()
        # The thread's own TransactionManager, as in MainLoop.commit.
        self.transactions = transaction.manager.manager
        self.begin, self.commit, self.abort = (
            loop.begin, loop.commit, loop.abort)
        self.call, self.may_retry, self.failed = (
            self._call, self._may_retry, self._failed)

    def close(self):
        self.loop = self.tick = self.begin = self.commit = self.abort = None
        self.transactions = None
        self.call = self.may_retry = self.failed = None

    def _call(self):
        tick, loop = self.tick, self.loop
        tick._returned = False
        generation = forks.generation
        try:
            signals.worker_begins(loop)
            result = loop.worker()
        except BaseException as e:
            loop.in_worker = False
            if forks.generation != generation:
                forks.end_child(e)
            raise
        loop.in_worker = False
        if forks.generation != generation:
            forks.end_child(None)
        tick._returned = True
        tick._doomed = self.transactions.get().isDoomed()
        return result

    def _may_retry(self):
        # Items that transaction_per_item committed must never run again.
        return self.tick.items.committed == 0

    def _failed(self, error):
        if isinstance(error, ConflictError):
            self.tick.conflicts += 1


def pause_after(result, ticks):
    """The seconds to sleep after a tick whose worker returned `result`,
    and the worker's mistake, if it made one (else None).

    None, True and False mean `ticks`; a number of seconds (int, float,
    Decimal, Fraction, ...) is taken as it is.  Anything else is a mistake,
    replaced by `ticks` if it is 'not a number' or 'NaN', by 0 if it is
    'negative', by MAX_PAUSE if it is 'longer than a year' (infinity, too).
    """
    if result is None or isinstance(result, bool):
        return ticks, None
    if not isinstance(result, numbers.Number):
        return ticks, 'not a number'
    try:
        value = float(result)
    except OverflowError:
        value = math.inf
    except (TypeError, ValueError):  # a complex number, sNaN
        value = math.nan
    if math.isnan(value):
        return ticks, 'NaN'
    if value < 0:
        return 0, 'negative'
    if value > MAX_PAUSE:
        return MAX_PAUSE, 'longer than a year'
    return value, None
