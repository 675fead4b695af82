"""The main loop: one transaction per tick, until told to stop.

gocept.runner 3.x kept ``appmain``, ``once``, ``from_config`` and ``init``
here; they are still importable from this module (see `__getattr__`).
"""

import importlib
import logging
import numbers

import transaction
import zope.component.hooks
from zope.component.interfaces import ISite

from gocept.runner import limits
from gocept.runner import logging as logcontext
from gocept.runner import outage
from gocept.runner import process
from gocept.runner import security
from gocept.runner import signals
from gocept.runner.interfaces import ConfigurationError
from gocept.runner.limits import LIMITS  # noqa: F401 (part of the API)
from gocept.runner.middleware import Hooks
from gocept.runner.security import RunnerRequest  # noqa: F401 (3.x)
from gocept.runner.security import lookup_principal  # noqa: F401
from gocept.runner.tick import MAX_PAUSE
from gocept.runner.tick import Exit  # noqa: F401 (gocept.runner.Exit)
from gocept.runner.tick import Steps
from gocept.runner.tick import Tick
from gocept.runner.wakeup import Sleep


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


class Names3x:
    """The names of gocept.runner 3.x's MainLoop, which code written for
    it uses, and which MainLoop keeps."""

    @property
    def principal_id(self):
        """The principal ticks run as, as MainLoop was given it."""
        return self.interactions.principal_id

    @principal_id.setter
    def principal_id(self, value):
        self.interactions.principal_id, self.interactions.principal = (
            value, None)

    @property
    def interaction(self):
        """Whether ticks run in a security interaction."""
        return self.principal_id is not None

    # `running`.
    _is_running = property(
        lambda self: self.running,
        lambda self, value: setattr(self, 'running', value))

    def stopMainLoop(self, signum, frame):
        """Stop the loop as the signal `signum` does (a signal handler that
        a 3.x program may install itself)."""
        signals.received(self, signum, frame)


class MainLoop(Names3x):
    """Call `worker` once per tick, each time in a transaction of its own
    (see gocept.runner.tick), on the site `app`.

    Between ticks the loop sleeps `ticks` seconds (a number, not negative),
    or what the worker returned.  It ends when the worker returns Exit or
    raises SystemExit or KeyboardInterrupt, after one tick if `once`, or
    when it is stopped (a signal, a limit, ``stop()``): `stopped_because`
    says why.  With a `principal` (an id, or a callable giving one) every
    tick runs in a security interaction of that principal.  `middleware` is
    the loop's own, after the back-off from storage outages (`outage`).

    Called, the loop runs in the Process that runs it, else as a process of
    its own with the process's `max_runtime`, `max_memory` and `heartbeat`
    (`max_ticks` is the loop's).  `begin()`, `commit()` and `abort()` are
    the steps of every tick; a subclass may extend them.
    """

    def __init__(self, app, ticks, worker, principal=None, once=False,
                 max_ticks=None, max_runtime=None, max_memory=None,
                 heartbeat=None, middleware=()):
        if not _is_seconds(ticks):
            raise ConfigurationError(
                f'ticks must be a number of seconds, not {ticks!r}')
        limits.check(dict(max_runtime=max_runtime, max_memory=max_memory))
        self.app, self.ticks, self.worker = app, ticks, worker
        self.once = once
        self.interactions = security.Interactions(principal)
        self.outage = outage.Outage()
        self.middleware = [self.outage, *middleware]
        if max_ticks is not None:
            self.middleware.append(limits.Limits(max_ticks=max_ticks))
        # The settings of the process of its own (see __call__).
        self.options = dict(max_runtime=max_runtime, max_memory=max_memory,
                            heartbeat=heartbeat)
        # The Process that runs the loop, while one does.
        self.process = None
        self.running = self.in_worker = self.committed = False
        self.stopped_because = self.signal = self.exit_code = None
        self.tick_count, self.last_tick = 0, None
        # The site every tick starts with.  __call__ decides; until then it
        # is `app`, which a subclass's own __call__ (3.x) makes the site.
        self._site = app if ISite.providedBy(app) else None
        self._hooks = Hooks(self.middleware)
        self._steps = None  # the Steps of the running loop's ticks
        # Mistakes of the worker: once at WARNING in a run of the loop.
        self.warn_once = logcontext.WarnOnce(log)
        self._sleep = Sleep()
        # Whether the next tick needs a new transaction to see fresh data.
        self._stale = True

    @property
    def name(self):
        """The worker's name, as the log lines give it."""
        return getattr(self.worker, '__qualname__', repr(self.worker))

    @property
    def principal(self):
        """The principal object ticks run as, or None."""
        return self.interactions.find_principal()

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
        # A principal that cannot be found stops us here.
        self.interactions.start()
        old_site = zope.component.hooks.getSite()
        self._site = self.app if ISite.providedBy(self.app) else old_site
        self.running, self.committed, self.tick_count = True, False, 0
        self.stopped_because = self.signal = self.last_tick = None
        self._stale = True
        self.warn_once.reset()
        self._hooks = hooks = Hooks([*self.process.hooks(), *self.middleware])
        before_tick = 'before_tick' in hooks.called
        if self.process.stopped_because is not None:
            self.signal = self.process.signal
            self.stop(self.process.stopped_because)
        self._sleep.open()
        self._steps = Steps(self)
        # Its log lines name the worker and the tick (gocept.runner.logging).
        named = logcontext.set_loop(self)
        try:
            zope.component.hooks.setSite(self._site)
            try:
                # Within: a loop that failed to start has ended for the
                # middleware, too (a host's heartbeat waits for no loop
                # that waits to start again).
                hooks.before_loop(self)
                while self.running:
                    if before_tick:
                        hooks.before_tick(self)
                        if not self.running:
                            break
                    tick = self.tick()
                    if self.once:
                        self.stop('once')
                    if tick.pause > 0:
                        self.sleep(tick.pause)
                    elif self._sleep.woken and self.running:
                        self._sleep.no_sleep(self._after_wakeup)
            finally:
                self.running = False
                hooks.after_loop(self)
        finally:
            self._steps.close()
            self._steps = None
            self.interactions.stop()
            self._sleep.close()
            zope.component.hooks.setSite(old_site)
            logcontext.reset_loop(named)

    run = __call__

    def tick(self):
        """Run the worker in a transaction; return the Tick."""
        self.tick_count += 1
        tick = self.last_tick = Tick(self.tick_count)
        tick.run(self, self._steps)
        if not self.committed:
            self.committed = (tick.outcome == 'committed' or
                              tick.items.committed > 0)
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
        if self.interactions.begin():
            self.warn_once(
                'interaction', 'Worker %s left a security interaction open;'
                ' ticks start without one', self.name)

    def act_as(self, principal_id):
        """Run the rest of the tick as the principal `principal_id` (None:
        as the loop's own principal); ConfigurationError if it is
        unknown."""
        self.interactions.act_as(principal_id)

    def commit(self):
        """Commit the tick's transaction (abort a doomed one); end the
        interaction."""
        # The thread's own TransactionManager (documented): a call less.
        current = transaction.manager.manager.get()
        if current.isDoomed():
            current.abort()
        else:
            current.commit()
        self.interactions.end()

    def abort(self):
        """Abort the tick's transaction; end the interaction."""
        transaction.abort()
        self.interactions.end()

    def sleep(self, seconds):
        """Sleep `seconds` (MAX_PAUSE at most), waking at once when the loop
        is stopped or told to tick now."""
        if seconds > 0:  # else the next tick follows at once
            self._stale = True
            self._sleep.sleep(float(min(seconds, MAX_PAUSE)),
                              lambda: self.running, self._after_wakeup)

    def wake(self):
        """End the loop's sleep between two ticks at once (it sleeps on if
        it still runs), or, if none follows the running tick, have the loop
        call `after_wakeup` after it; safe in a signal handler."""
        self._sleep.wake()

    def tick_now(self):
        """End the loop's sleep between two ticks at once and tick; if it
        does not sleep now, the next sleep ends as soon as it begins.  Safe
        from other threads and in a signal handler."""
        self._sleep.tick_now()

    def annotate_user(self, txn, principal_id):
        """Name the principal `principal_id` as the user of the transaction
        `txn`, as the publisher does."""
        txn.setUser(principal_id)

    def stop(self, reason='stop'):
        """Leave the loop after the running tick; `reason` becomes
        `stopped_because` unless it is stopping for another already.  Safe
        in a signal handler, and from another thread."""
        self.running = False
        if self.stopped_because is None:
            self.stopped_because = reason
        self._sleep.pipe.wake()

    def _after_wakeup(self):
        self._hooks.after_wakeup(self)


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
