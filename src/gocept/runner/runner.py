"""The main loop: one transaction per tick, until told to stop.

gocept.runner 3.x kept ``appmain``, ``once``, ``from_config`` and ``init``
here; they are still importable from this module (see `__getattr__`).
"""

import importlib
import logging
import math
import numbers
import os
import time

import transaction
import zope.component.hooks
import zope.component.interfaces
from ZODB.POSException import ConflictError

from gocept.runner import forks
from gocept.runner import limits
from gocept.runner import outage
from gocept.runner import peritem
from gocept.runner import process
from gocept.runner import retry
from gocept.runner import security
from gocept.runner.interfaces import ConfigurationError
from gocept.runner.limits import LIMITS  # noqa: F401 (part of the API)
from gocept.runner.middleware import Hooks
from gocept.runner.security import RunnerRequest  # noqa: F401 (3.x)
from gocept.runner.security import lookup_principal  # noqa: F401
from gocept.runner.wakeup import Wakeup


log = logging.getLogger(__name__)

# The values of MainLoop.stopped_because.
STOP_REASONS = (
    'Exit',  # the worker returned gocept.runner.Exit
    'once',  # the loop ran its one tick
    'signal',  # SIGTERM, SIGHUP or SIGINT (MainLoop.signal has which)
    'SystemExit',  # raised by the worker (MainLoop.exit_code has its code)
    'KeyboardInterrupt',  # raised by the worker
    'stop',  # MainLoop.stop() was called
    'max_ticks', 'max_runtime', 'max_memory',  # a limit was reached
)

# The longest pause between two ticks (seconds): a year.  A longer one, or
# one that is not a number of seconds at all, is a worker's mistake.
MAX_PAUSE = 365 * 24 * 3600


class _Exit:
    """A worker returns ``gocept.runner.Exit`` to end the main loop."""

    def __repr__(self):
        return 'gocept.runner.Exit'


Exit = _Exit()


class Tick:
    """One call of the worker and its transaction.

    `outcome` is one of 'committed', 'doomed' (the worker doomed the
    transaction, which was aborted), 'error' (the worker or the commit
    failed), 'conflict' (after the retries), 'unavailable' (the storage),
    'aborted' (by SystemExit or KeyboardInterrupt).  `items` counts what
    transaction_per_item did in it (a peritem.Collector).
    """

    def __init__(self, number):
        self.number = number
        self.outcome = None
        self.error = None
        self.result = None
        # How many conflicts were retried; how many there were in all.
        self.retried = 0
        self.conflicts = 0
        self.items = peritem.Collector()
        # Seconds to sleep before the next tick.
        self.pause = 0
        # When the tick began and ended (time.monotonic()).
        self.started = time.monotonic()
        self.ended = None


class MainLoop:
    """Call `worker` once per tick, each time in a transaction of its own.

    `app` is the site of every tick (if it is a site).  Between ticks the
    loop sleeps `ticks` seconds (a number, not negative; else
    ConfigurationError), or as many as the worker returned.  A tick whose
    commit conflicts is retried at once a few times (gocept.runner.retry).
    The loop ends when the worker returns Exit or raises SystemExit or
    KeyboardInterrupt, after one tick if `once` is true, or when it is
    stopped (a signal, a limit, ``stop()``); `stopped_because` then says
    why.  With a `principal` (an id, or a callable returning one) every
    tick runs in a security interaction of that principal.

    `middleware` is the loop's own, after the back-off while the storage is
    unavailable (`outage`).  Called, the loop runs in the Process that runs
    it, or as a process of its own, with the process's `max_runtime`,
    `max_memory` and `heartbeat` (see gocept.runner.process); `max_ticks`
    is the loop's own limit.

    `begin()`, `commit()` and `abort()` are the steps of every tick; a
    subclass may extend them.
    """

    def __init__(self, app, ticks, worker, principal=None, once=False,
                 max_ticks=None, max_runtime=None, max_memory=None,
                 heartbeat=None, middleware=()):
        if not _is_seconds(ticks):
            raise ConfigurationError(
                f'ticks must be a number of seconds, not {ticks!r}')
        self.app = app
        self.ticks = ticks
        self.worker = worker
        self.principal_id = principal
        self.once = once
        self.outage = outage.Outage()
        self.middleware = [self.outage, *middleware]
        limits.check(dict(max_runtime=max_runtime, max_memory=max_memory))
        if max_ticks is not None:
            self.middleware.append(limits.Limits(max_ticks=max_ticks))
        # The settings of the process of its own (see __call__).
        self.options = dict(max_runtime=max_runtime, max_memory=max_memory,
                            heartbeat=heartbeat)
        # The Process that runs the loop, while one does.
        self.process = None
        self.running = False
        self.stopped_because = self.signal = self.exit_code = None
        self.tick_count = 0
        self.last_tick = None
        # Whether a tick has committed; how often the loop failed (a
        # process of several starts it again).
        self.committed = False
        self.failures = 0
        self.in_worker = False
        self._principal = None
        # The site every tick starts with.  __call__ decides; until then it
        # is `app`, which a subclass's own __call__ (3.x) makes the site.
        self._site = (app if zope.component.interfaces.ISite.providedBy(app)
                      else None)
        self._hooks = Hooks(self.middleware)
        self._warned = set()
        self._wakeup = Wakeup()
        # Whether the next tick needs a new transaction to see fresh data.
        self._stale = True
        self._worker_returned = self._doomed = False
        self._pid = os.getpid()

    @property
    def name(self):
        """The worker's name, as the log lines give it."""
        return getattr(self.worker, '__qualname__', repr(self.worker))

    @property
    def principal(self):
        """The principal object ticks run as, or None."""
        if self._principal is None and self.principal_id is not None:
            self._principal = security.lookup_principal(self.principal_id)
        return self._principal

    @property
    def interaction(self):
        """Whether ticks run in a security interaction (3.x's name)."""
        return self.principal_id is not None

    # gocept.runner 3.x's name for `running`.
    _is_running = property(
        lambda self: self.running,
        lambda self, value: setattr(self, 'running', value))

    @property
    def failed(self):
        """Whether the last tick failed (the worker or its commit)."""
        return self.last_tick is not None and self.last_tick.outcome in (
            'error', 'conflict', 'unavailable')

    @property
    def items_failed(self):
        """How many transaction_per_item items failed in the last tick."""
        return 0 if self.last_tick is None else self.last_tick.items.failed

    def __call__(self):
        """Run ticks until the loop is told to stop: in the process that
        runs it, else as a process of its own."""
        if self.process is None:
            process.Process(
                [self], process.middleware(**self.options)).run()
            return
        self._principal = None
        self.principal  # a principal that cannot be found stops us here
        old_site = zope.component.hooks.getSite()
        self._site = (self.app if zope.component.interfaces.ISite.providedBy(
            self.app) else old_site)
        self.running = True
        self.stopped_because = self.signal = self.last_tick = None
        self.tick_count = 0
        self.committed = False
        self._warned = set()
        self._stale = True
        self._pid = os.getpid()
        self._hooks = hooks = Hooks([*self.process.hooks(), *self.middleware])
        if self.process.stopped_because is not None:
            self.signal = self.process.signal
            self.stop(self.process.stopped_because)
        self._wakeup.open()
        try:
            zope.component.hooks.setSite(self._site)
            hooks.before_loop(self)
            try:
                while self.running:
                    hooks.before_tick(self)
                    if not self.running:
                        break
                    tick = self.tick()
                    if self.once:
                        self.stop('once')
                    self.sleep(tick.pause)
            finally:
                self.running = False
                hooks.after_loop(self)
        finally:
            self._wakeup.close()
            zope.component.hooks.setSite(old_site)

    run = __call__

    def tick(self):
        """Run the worker in a transaction; return the Tick."""
        self.tick_count += 1
        tick = self.last_tick = Tick(self.tick_count)
        with tick.items:
            self._run_worker(tick)
        tick.ended = time.monotonic()
        self.committed = (self.committed or tick.outcome == 'committed' or
                          tick.items.committed > 0)
        if log.isEnabledFor(logging.DEBUG):
            log.debug('Tick %s of worker %s: %s in %.3f s', tick.number,
                      self.name, _describe_outcome(tick),
                      tick.ended - tick.started)
        self._hooks.after_tick(self, tick)
        return tick

    def begin(self):
        """Begin the tick: a fresh transaction, the site, the interaction."""
        if self._stale:
            # A new transaction has the connection catch up with what others
            # committed since.  Right after the last tick that is done: the
            # end of its transaction did it.
            transaction.begin()
        self._stale = False
        if zope.component.hooks.getSite() is not self._site:
            log.debug('Worker %s changed the site; it is %r again',
                      self.name, self._site)
            zope.component.hooks.setSite(self._site)
        if zope.security.management.queryInteraction() is not None:
            self._warn_once(
                'interaction', 'Worker %s left a security interaction open;'
                ' ticks start without one', self.name)
            security.end()
        security.begin(self.principal)

    def commit(self):
        """Commit the tick's transaction (abort a doomed one); end the
        interaction."""
        if transaction.isDoomed():
            transaction.abort()
        else:
            transaction.commit()
        security.end()

    def abort(self):
        """Abort the tick's transaction; end the interaction."""
        transaction.abort()
        security.end()

    def _run_worker(self, tick):
        def failed(error):
            if isinstance(error, ConflictError):
                tick.conflicts += 1
        try:
            tick.result, tick.retried = retry.run(
                self._call_worker, begin=self._begin_attempt,
                commit=self.commit, abort=self.abort,
                # Items that transaction_per_item committed must never run
                # again.
                may_retry=lambda: tick.items.committed == 0, failed=failed)
        except (SystemExit, KeyboardInterrupt) as e:
            tick.outcome, tick.error = 'aborted', e
            self.exit_code = getattr(e, 'code', None)
            self.stop(type(e).__name__)
        except BaseException as e:
            tick.error, tick.pause = e, self.ticks
            tick.outcome = self._log_failure(tick, e)
        else:
            tick.outcome = 'doomed' if self._doomed else 'committed'
            if tick.result is Exit:
                self.stop('Exit')
            else:
                tick.pause = self.pause(tick.result)

    def _log_failure(self, tick, error):
        """Log why the tick failed; return its outcome."""
        if outage.unavailable(error):
            return 'unavailable'  # the Outage middleware logs it
        if isinstance(error, ConflictError):
            if tick.items.committed:
                log.warning(
                    'Conflict in worker %s, transaction aborted and not'
                    ' tried again: items of transaction_per_item committed'
                    ' in it: %s', self.name, error)
            else:
                log.warning('Conflict in worker %s, transaction aborted after'
                            ' %s attempts: %s', self.name, retry.ATTEMPTS,
                            error)
            return 'conflict'
        if self._worker_returned:
            log.exception('Error committing the transaction of worker %s',
                          self.name)
        else:
            log.exception('Error in worker %s, transaction aborted',
                          self.name)
        return 'error'

    def _begin_attempt(self):
        self._doomed = False
        self.begin()

    def _call_worker(self):
        self._worker_returned = False
        self.in_worker = True
        try:
            result = self.worker()
        except BaseException as e:
            self.in_worker = False
            if os.getpid() != self._pid:
                forks.end_child(e)
            raise
        self.in_worker = False
        if os.getpid() != self._pid:
            forks.end_child(None)
        self._worker_returned = True
        self._doomed = transaction.isDoomed()
        return result

    def pause(self, result):
        """The seconds to sleep after a tick whose worker returned `result`.

        None, True and False mean `ticks`; a number of seconds (int, float,
        Decimal, Fraction, ...) is taken as it is.  Anything else is a
        worker's mistake, replaced by `ticks` if it is not a number or NaN,
        by 0 if it is negative, by MAX_PAUSE if it is longer (infinity,
        too).  Each kind of mistake is logged at WARNING once per loop, and
        at DEBUG after that.
        """
        if result is None or isinstance(result, bool):
            return self.ticks
        seconds, kind, replacement = _seconds(result, self.ticks)
        if kind is None:
            return seconds
        self._warn_once(
            ('result', kind), 'Worker %s returned %r, which is %s;'
            ' sleeping %s seconds', self.name, result, kind, replacement)
        return replacement

    def sleep(self, seconds):
        """Sleep `seconds` (MAX_PAUSE at most), waking at once when the loop
        is stopped."""
        deadline = time.monotonic() + float(min(seconds, MAX_PAUSE))
        self._stale = self._stale or seconds > 0
        while self.running:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # select() takes no timeout longer than about 9e9 seconds.
            if self._wakeup.sleep(min(remaining, 3600)):
                self._hooks.after_wakeup(self)

    def wake(self):
        """End the loop's sleep between two ticks at once (it sleeps on if
        it still runs); safe in a signal handler."""
        self._wakeup.wake()

    def stop(self, reason='stop'):
        """Leave the loop after the running tick.

        `reason` becomes `stopped_because` unless the loop is stopping for
        another reason already.  Safe in a signal handler, and from another
        thread.
        """
        self.running = False
        if self.stopped_because is None:
            self.stopped_because = reason
        self._wakeup.wake()

    def stopMainLoop(self, signum, frame):
        """Stop the loop as the signal `signum` does (a signal handler that
        a 3.x program may install itself)."""
        if self.process is not None:
            self.process.signals.handle(signum, frame)
        else:
            # Not running: nothing would log it later.
            self.signal = signum
            self.stop('signal')
            log.info('Received signal %s, terminating.', signum)

    def _warn_once(self, kind, message, *args):
        level = logging.DEBUG if kind in self._warned else logging.WARNING
        self._warned.add(kind)
        log.log(level, message, *args)


# gocept.runner 3.x had these in this module, and code written for it
# imports them from here; they live in modules that build on this one.
_MOVED = {'appmain': 'gocept.runner.decorators',
          'once': 'gocept.runner.decorators',
          'from_config': 'gocept.runner.config',
          'init': 'gocept.runner.environment'}


def __getattr__(name):
    if name not in _MOVED:
        raise AttributeError(
            f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(_MOVED[name]), name)


def _seconds(value, ticks):
    """`value` as seconds to sleep: (seconds, None), or (None, what is
    wrong with it, the seconds to sleep instead)."""
    if not isinstance(value, numbers.Number):
        return None, 'not a number', ticks
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    except (TypeError, ValueError):  # a complex number, sNaN
        seconds = math.nan
    if math.isnan(seconds):
        return None, 'NaN', ticks
    if seconds < 0:
        return None, 'negative', 0
    if seconds > MAX_PAUSE:
        return None, 'longer than a year', MAX_PAUSE
    return seconds, None, None


def _is_seconds(value):
    """Whether `value` is a number of seconds: not negative, not NaN."""
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        return False
    try:
        return float(value) >= 0
    except OverflowError:
        return value > 0
    except (TypeError, ValueError):  # a complex number, sNaN
        return False


def _describe_outcome(tick):
    if tick.outcome == 'committed' and tick.retried:
        return f'committed after {tick.retried} conflicts'
    if tick.outcome == 'unavailable':
        return 'storage unavailable'
    if tick.outcome == 'aborted':
        return f'aborted by {type(tick.error).__name__}'
    return tick.outcome
