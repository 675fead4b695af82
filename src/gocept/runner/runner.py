"""The main loop: one transaction per tick, until told to stop.

(gocept.runner 3.x kept ``appmain``, ``once``, ``from_config`` and ``init``
here, too; the package's ``__init__`` puts them into this module.)
"""

import logging
import math
import numbers
import os
import signal
import sys
import time
import traceback

import transaction
import ZConfig.components.logger.loghandler
import zope.authentication.interfaces
import zope.component
import zope.component.hooks
import zope.component.interfaces
import zope.publisher.base
import zope.security.management
from ZODB.POSException import ConflictError

from gocept.runner import outage
from gocept.runner import peritem
from gocept.runner import retry
from gocept.runner import signals
from gocept.runner.config import ConfigurationError
from gocept.runner.health import Heartbeat
from gocept.runner.health import SystemdNotify
from gocept.runner.limits import LIMITS  # noqa: F401 (part of the API)
from gocept.runner.limits import Limits
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


class RunnerRequest(zope.publisher.base.BaseRequest):
    """The participation of a tick that runs as a principal.

    A request, as in gocept.runner 3.x (with 3.x's name and signature):
    code that takes the interaction's participation for the request (view
    lookups, i18n) works in a tick.  `begin` calls ``setPrincipal``.
    """

    def __init__(self, *args):
        super().__init__(None, {}, positional=args)


class Tick:
    """One call of the worker and its transaction.

    `outcome` is one of 'committed', 'doomed' (the worker doomed the
    transaction, which was aborted), 'error' (the worker or the commit
    failed), 'conflict' (after the retries), 'unavailable' (the storage),
    'aborted' (by SystemExit or KeyboardInterrupt).
    """

    def __init__(self, number):
        self.number = number
        self.outcome = None
        self.error = None
        self.result = None
        # How many conflicts were retried; how many there were in all.
        self.retried = 0
        self.conflicts = 0
        # What the runs of transaction_per_item did (a peritem.Collector).
        self.items = None
        # Seconds to sleep before the next tick.
        self.pause = 0
        # When the tick began and ended (time.monotonic()).
        self.started = time.monotonic()
        self.ended = None


class MainLoop:
    """Call `worker` once per tick, each time in a transaction of its own.

    `app` is the site of every tick (if it is a site).  Between ticks the
    loop sleeps `ticks` seconds (a number, not negative; else
    ConfigurationError), or as many as the worker returned.  A tick
    whose commit conflicts is retried at once a few times (see
    gocept.runner.retry).  The loop ends when the worker returns Exit or
    raises SystemExit or KeyboardInterrupt, on SIGTERM or SIGHUP (after the
    running tick has committed), on SIGINT (which aborts a running worker),
    after one tick if `once` is true, or when a middleware stops it;
    `stopped_because` then says why.  With a `principal` (an id, or a
    callable returning one) every tick runs in a security interaction of
    that principal.

    The options `max_ticks`, `max_runtime`, `max_memory` (see
    gocept.runner.limits) and `heartbeat` (see gocept.runner.health) add
    their middleware; `middleware` adds a program's own.

    `begin()`, `commit()` and `abort()` are the steps of every tick; a
    subclass may extend them.
    """

    def __init__(self, app, ticks, worker, principal=None, once=False,
                 max_ticks=None, max_runtime=None, max_memory=None,
                 heartbeat=None, middleware=()):
        self.app = app
        if not _is_seconds(ticks):
            raise ConfigurationError(
                f'ticks must be a number of seconds, not {ticks!r}')
        self.ticks = ticks
        self.worker = worker
        self.principal_id = principal
        self.once = once
        self.middleware = [outage.Outage()]
        if (max_ticks, max_runtime, max_memory) != (None, None, None):
            self.middleware.append(Limits(max_ticks, max_runtime, max_memory))
        if heartbeat is not None:
            self.middleware.append(Heartbeat(heartbeat))
        self.middleware.append(SystemdNotify())
        self.middleware.extend(middleware)
        self.running = False
        # Whether the last tick failed (worker error, failed commit).
        self.failed = False
        # Whether a tick has committed.
        self.committed = False
        # How many transaction_per_item items failed in the last tick.
        self.items_failed = 0
        self._items = peritem.Collector()
        # The code of a SystemExit the worker raised, if it raised one.
        self.exit_code = None
        # Why the loop ended: one of STOP_REASONS; the signal that ended it.
        self.stopped_because = None
        self.signal = None
        self.tick_count = 0
        self._principal = None
        # The site every tick starts with.  __call__ decides; until then it
        # is `app`, which a subclass's own __call__ (3.x) makes the site.
        self._site = (app if zope.component.interfaces.ISite.providedBy(app)
                      else None)
        self._warned = set()
        self._signal_to_log = None
        self._reopen = False
        self._wakeup = Wakeup()
        # Whether the next tick needs a new transaction to see fresh data.
        self._stale = True
        self._in_worker = False
        self._worker_returned = False
        self._doomed = False
        self._pid = os.getpid()

    @property
    def name(self):
        """The worker's name, as the log lines give it."""
        return getattr(self.worker, '__qualname__', repr(self.worker))

    @property
    def principal(self):
        """The principal object ticks run as, or None."""
        if self._principal is None and self.principal_id is not None:
            self._principal = lookup_principal(self.principal_id)
        return self._principal

    @property
    def interaction(self):
        """Whether ticks run in a security interaction (3.x's name)."""
        return self.principal_id is not None

    # gocept.runner 3.x's name for `running`.
    _is_running = property(
        lambda self: self.running,
        lambda self, value: setattr(self, 'running', value))

    def __call__(self):
        """Run ticks until the loop is told to stop."""
        self._principal = None
        self.principal  # a principal that cannot be found stops us here
        old_site = zope.component.hooks.getSite()
        self._site = (self.app if zope.component.interfaces.ISite.providedBy(
            self.app) else old_site)
        self.running = True
        self.stopped_because = self.signal = None
        self.tick_count = 0
        self.committed = False
        self._warned = set()
        self._stale = True
        self._pid = os.getpid()
        self._wakeup.open()
        done = []
        try:
            with signals.handled(self):
                zope.component.hooks.setSite(self._site)
                for middleware in self.middleware:
                    middleware.before_loop(self)
                    done.append(middleware)
                while self._before_tick():
                    tick = self.tick()
                    self._log_signal()
                    if self.once:
                        self.stop('once')
                    if self.running:
                        self.sleep(tick.pause)
                    self._log_signal()
        finally:
            self.running = False
            self._log_signal()
            for middleware in reversed(done):
                middleware.after_loop(self)
            self._wakeup.close()
            zope.component.hooks.setSite(old_site)

    run = __call__

    def _before_tick(self):
        # Whether the next tick is to run.
        for middleware in self.middleware:
            if self.running:
                middleware.before_tick(self)
        return self.running

    def tick(self):
        """Run the worker in a transaction; return the Tick."""
        self.failed = False
        self.tick_count += 1
        tick = Tick(self.tick_count)
        with peritem.collect() as self._items:
            self._run_worker(tick)
        tick.ended = time.monotonic()
        tick.items = self._items
        self.items_failed = self._items.failed
        self.failed = tick.outcome not in ('committed', 'doomed', 'aborted')
        self.committed = (self.committed or tick.outcome == 'committed' or
                          self._items.committed > 0)
        if log.isEnabledFor(logging.DEBUG):
            log.debug('Tick %s of worker %s: %s in %.3f s', tick.number,
                      self.name, _describe_outcome(tick),
                      tick.ended - tick.started)
        for middleware in self.middleware:
            middleware.after_tick(self, tick)
        self._reopen_logs()
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
            zope.security.management.endInteraction()
        if self.principal is not None:
            request = RunnerRequest()
            request.setPrincipal(self.principal)
            zope.security.management.newInteraction(request)

    def commit(self):
        """Commit the tick's transaction (abort a doomed one); end the
        interaction."""
        if transaction.isDoomed():
            transaction.abort()
        else:
            transaction.commit()
        zope.security.management.endInteraction()

    def abort(self):
        """Abort the tick's transaction; end the interaction."""
        transaction.abort()
        zope.security.management.endInteraction()

    def _run_worker(self, tick):
        def failed(error):
            if isinstance(error, ConflictError):
                tick.conflicts += 1
        try:
            tick.result, tick.retried = retry.run(
                self._call_worker, begin=self._begin_attempt,
                commit=self.commit, abort=self.abort,
                may_retry=self._may_retry, failed=failed)
        except (SystemExit, KeyboardInterrupt) as e:
            tick.outcome, tick.error = 'aborted', e
            self.exit_code = getattr(e, 'code', None)
            self.stop(type(e).__name__)
            return
        except BaseException as e:
            tick.error = e
            tick.pause = self.ticks
            if outage.unavailable(e):
                tick.outcome = 'unavailable'
            elif isinstance(e, ConflictError):
                tick.outcome = 'conflict'
                if self._may_retry():
                    log.warning(
                        'Conflict in worker %s, transaction aborted after'
                        ' %s attempts: %s', self.name, retry.ATTEMPTS, e)
                else:
                    log.warning(
                        'Conflict in worker %s, transaction aborted and not'
                        ' tried again: items of transaction_per_item'
                        ' committed in it: %s', self.name, e)
            else:
                tick.outcome = 'error'
                if self._worker_returned:
                    log.exception(
                        'Error committing the transaction of worker %s',
                        self.name)
                else:
                    log.exception('Error in worker %s, transaction aborted',
                                  self.name)
            return
        tick.outcome = 'committed'
        if self._doomed:
            tick.outcome = 'doomed'
        if tick.result is Exit:
            self.stop('Exit')
        else:
            tick.pause = self.pause(tick.result)

    def _may_retry(self):
        # Items that transaction_per_item committed must never run again.
        return self._items.committed == 0

    def _begin_attempt(self):
        self._doomed = False
        self.begin()

    def _call_worker(self):
        self._worker_returned = False
        self._in_worker = True
        try:
            result = self.worker()
        except BaseException as e:
            self._in_worker = False
            if os.getpid() != self._pid:
                _end_forked_child(e)
            raise
        self._in_worker = False
        if os.getpid() != self._pid:
            _end_forked_child(None)
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
        if not isinstance(result, numbers.Number):
            kind, replacement = 'not a number', self.ticks
        else:
            try:
                seconds = float(result)
            except OverflowError:
                seconds = math.inf
            except (TypeError, ValueError):  # a complex number, sNaN
                seconds = math.nan
            if math.isnan(seconds):
                kind, replacement = 'NaN', self.ticks
            elif seconds < 0:
                kind, replacement = 'negative', 0
            elif seconds > MAX_PAUSE:
                kind, replacement = 'longer than a year', MAX_PAUSE
            else:
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
            self._wakeup.sleep(min(remaining, 3600))
            self._reopen_logs()

    def stop(self, reason='stop'):
        """Leave the loop after the running tick.

        `reason` becomes `stopped_because` unless the loop is stopping for
        another reason already.
        """
        self.running = False
        if self.stopped_because is None:
            self.stopped_because = reason
        self._wakeup.wake()

    def stopMainLoop(self, signum, frame):
        """Stop the loop as the signal `signum` does (a signal handler)."""
        self.signal = self._signal_to_log = signum
        self.stop('signal')
        if not self._wakeup.is_open:
            # Not running: nothing will log it later.
            self._log_signal()
        if signum == signal.SIGINT and self._in_worker:
            # Like Python's own handler, but only while the worker runs: a
            # commit is never cut short.
            raise KeyboardInterrupt

    def reopen_logs(self):
        """Reopen the log files between two ticks (or now, when asleep)."""
        self._reopen = True
        self._wakeup.wake()

    def _reopen_logs(self):
        # Here, between ticks, not in the handler: see _log_signal.
        if self._reopen:
            self._reopen = False
            ZConfig.components.logger.loghandler.reopenFiles()
            log.debug('Log files reopened')

    def _log_signal(self):
        # Logged here, not in the handler: a handler may interrupt a write to
        # the very stream the log goes to.
        if self._signal_to_log is not None:
            log.info('Received signal %s, terminating.', self._signal_to_log)
            self._signal_to_log = None

    def _warn_once(self, kind, message, *args):
        level = logging.DEBUG if kind in self._warned else logging.WARNING
        self._warned.add(kind)
        log.log(level, message, *args)


def lookup_principal(principal_id):
    """The principal object of `principal_id` (or of what it returns, if it
    is callable), or None."""
    if callable(principal_id):
        principal_id = principal_id()
    if principal_id is None:
        return None
    auth = zope.component.queryUtility(
        zope.authentication.interfaces.IAuthentication)
    if auth is None:
        raise ConfigurationError(
            f'Cannot look up the principal {principal_id!r}: the site'
            ' ZCML registers no IAuthentication utility (include'
            ' zope.principalregistry)')
    try:
        return auth.getPrincipal(principal_id)
    except zope.authentication.interfaces.PrincipalLookupError:
        raise ConfigurationError(
            f'Unknown principal {principal_id!r}') from None


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


def _end_forked_child(error):
    """End a child that the worker forked and that came back into the loop.

    The child shares the parent's storage and lock files: closing them, or
    committing, would harm the parent's run.  So it ends here, at once, with
    the status of its SystemExit (1 after another error, 0 after a return).
    """
    status = 0
    if isinstance(error, SystemExit):
        status = error.code
        if status is not None and not isinstance(status, int):
            print(status, file=sys.stderr)
            status = 1
    elif error is not None:
        traceback.print_exception(error)
        status = 1
    for stream in sys.stdout, sys.stderr:
        try:
            stream.flush()
        except Exception:
            pass
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(status or 0)


def _describe_outcome(tick):
    if tick.outcome == 'committed' and tick.retried:
        return f'committed after {tick.retried} conflicts'
    if tick.outcome == 'unavailable':
        return 'storage unavailable'
    if tick.outcome == 'aborted':
        return f'aborted by {type(tick.error).__name__}'
    return tick.outcome
