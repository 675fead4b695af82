"""The hooks of a run's life, for everything that goes on around the ticks.

A process runs main loops (gocept.runner.process); each loop runs ticks
(gocept.runner.runner).  Whatever else there is, is a Middleware in a
module named after it: the back-off while the storage is unavailable
(outage), limits, the heartbeat and systemd (limits, health), signals
(signals), metrics (metrics).  A loop's own middleware sees that loop; a
process's middleware sees the process and every loop of it, called from
each loop's thread.  A program may add its own to either.
"""

import logging


log = logging.getLogger(__name__)


class Middleware:
    """Does nothing at every point of a run's life; override what you need.

    The hooks are called in the order of the middleware: the process's
    first, then the loop's own.  An exception in `before_process` or
    `before_loop` ends the process or the loop before it ticks; one in
    any other hook is logged and the run goes on (see Hooks).
    """

    def before_process(self, process):
        """The application is set up; no loop runs yet.  (Only for the
        process's middleware.)

        An exception ends the run before any tick: a ConfigurationError,
        say, for a file the middleware cannot write.
        """

    def before_loop(self, loop):
        """The loop starts: its site is set, no tick has run yet.

        An exception ends the loop (a host starts it again later).
        """

    def before_tick(self, loop):
        """A tick is about to begin (also the first).

        A middleware may stop the loop with ``loop.stop(reason)``, or the
        process with ``loop.process.stop(reason)``; then no tick runs.
        """

    def after_tick(self, loop, tick):
        """`tick` has ended; its `outcome` says how.

        A middleware may change `tick.pause`, the seconds to sleep before the
        next tick, or stop the loop or the process.
        """

    def after_wakeup(self, loop):
        """Something woke the loop while it slept between two ticks (a
        signal, a stop, ``tick_now()``); it sleeps on if it still runs and
        was not told to tick now.  A loop that does
        not sleep after a tick (``ticks=0``) and still runs is told after
        the tick in which it was woken."""

    def after_loop(self, loop):
        """The loop has ended, for whatever reason (also an error)."""

    def after_process(self, process):
        """Every loop of the process has ended.  (Only for the process's
        middleware.)"""


def _nothing(*args):
    pass


# The hooks that Hooks calls, and whether it logs their errors and goes on.
HOOKS = {'before_loop': False, 'before_tick': True, 'after_tick': True,
         'after_wakeup': True, 'after_loop': True, 'after_process': True}


class Hooks:
    """Calls a hook of every middleware in `middleware` that has it, in
    order: ``hooks.after_tick(loop, tick)``.

    A hook that raises an Exception is logged, as an ERROR with its
    traceback the first time and at DEBUG after that, and the other hooks
    and the run go on; but `before_loop` raises it.  (`before_process` is
    not called here: the process calls it, and its errors end the run.)
    """

    def __init__(self, middleware):
        self.middleware = list(middleware)
        self._failed = set()
        # The hooks that some middleware has (a loop need not call the
        # others at all).
        self.called = set()
        for hook, guarded in HOOKS.items():
            # Only the middleware that override the hook: an empty tick
            # would otherwise spend much of its time calling no-ops.
            methods = [
                getattr(m, hook) for m in self.middleware
                if getattr(type(m), hook, None) not in (
                    None, getattr(Middleware, hook))]
            if methods:
                self.called.add(hook)
            setattr(self, hook, self._caller(hook, methods, guarded))

    def _caller(self, hook, methods, guarded):
        # Each caller takes its hook's arguments, not *args, which would
        # make a tuple for every call; after_tick's is called every tick.
        if not methods:
            return _nothing
        if hook == 'after_tick' and len(methods) == 1:
            [method] = methods

            def call_one_after_tick(loop, tick):
                try:
                    method(loop, tick)
                except Exception:
                    self._log(hook, method)
            return call_one_after_tick

        if hook == 'after_tick':
            def call_after_tick(loop, tick):
                for method in methods:
                    try:
                        method(loop, tick)
                    except Exception:
                        self._log(hook, method)
            return call_after_tick

        if not guarded:
            def call_all(subject):
                for method in methods:
                    method(subject)
            return call_all

        def call(subject):
            for method in methods:
                try:
                    method(subject)
                except Exception:
                    self._log(hook, method)
        return call

    def _log(self, hook, method):
        key = (hook, id(method.__self__))
        level = logging.DEBUG if key in self._failed else logging.ERROR
        self._failed.add(key)
        log.log(level, 'Error in %s of %r, going on', hook,
                method.__self__, exc_info=True)
