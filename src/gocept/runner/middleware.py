"""The hooks of a main loop's life, for what goes on around the ticks.

Limits, the heartbeat, systemd's notifications and the back-off while the
storage is unavailable are each a Middleware of their own module; a program
may add its own (MainLoop's `middleware` argument).
"""


class Middleware:
    """Does nothing at every point of the loop's life; override what you need.

    The hooks are called in the order of the loop's middleware list.
    """

    def before_loop(self, loop):
        """The loop starts: the site is set, no tick has run yet."""

    def before_tick(self, loop):
        """A tick is about to begin (also the first).

        A middleware may stop the loop with ``loop.stop(reason)``; then no
        tick runs.
        """

    def after_tick(self, loop, tick):
        """`tick` has ended; its `outcome` says how.

        A middleware may change `tick.pause`, the seconds to sleep before the
        next tick, or stop the loop with ``loop.stop(reason)``.
        """

    def after_loop(self, loop):
        """The loop has ended, for whatever reason (also an error)."""
