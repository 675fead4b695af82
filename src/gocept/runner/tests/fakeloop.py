"""A stand-in for a MainLoop, to test a middleware on its own.

A middleware sees little of a loop: its `name`, the `process` that runs
it, whether it is `running`, `stop()`, `wake()`, its `outage`, and the
ticks (gocept.runner.tick.Tick) that its hooks are given.  A FakeLoop has
just that.  Called, it calls the hooks of its process's middleware and its
own in the order a MainLoop does, around ticks whose outcomes the test
gives, with no database, no transaction and no sleep between the ticks.

The tests of what runs on a database (a MainLoop, a Process of several
loops) take the `root` of a FileStorage of their own.
"""

import os
import shutil
import tempfile

import transaction
import ZODB

from gocept.runner import outage
from gocept.runner.middleware import Hooks
from gocept.runner.middleware import Middleware
from gocept.runner.tick import Tick


class FakeLoop:
    """A loop called `name` with its own `middleware`, whose ticks end with
    `outcomes` one after the other ('committed', 'error', 'unavailable',
    ...); `work(loop, tick)`, if given, runs in each tick, as the worker.

    When the outcomes run out, the loop ends as a worker that returned
    Exit ends it.
    """

    def __init__(self, name='worker', middleware=(),
                 outcomes=('committed',) * 3, work=None):
        self.name = name
        self.middleware = list(middleware)
        self.outcomes = list(outcomes)
        self.work = work
        self.process = None
        self.running = self.in_worker = False
        self.stopped_because = self.signal = None
        self.outage = outage.Outage()
        self.ticks = []
        self.woken = 0

    def stop(self, reason='stop'):
        self.running = False
        if self.stopped_because is None:
            self.stopped_because = reason

    def wake(self):
        self.woken += 1

    def tick(self, outcome='committed', pause=0, error=None):
        """The loop's next Tick, ended with `outcome`."""
        tick = Tick(len(self.ticks) + 1)
        tick.outcome, tick.pause, tick.error = outcome, pause, error
        tick.ended = tick.started
        self.ticks.append(tick)
        return tick

    def __call__(self):
        own = [] if self.process is None else self.process.hooks()
        hooks = Hooks([*own, *self.middleware])
        self.running, self.stopped_because, self.ticks = True, None, []
        if self.process is not None and (
                self.process.stopped_because is not None):
            self.stop(self.process.stopped_because)
        hooks.before_loop(self)
        try:
            for outcome in self.outcomes:
                hooks.before_tick(self)
                if not self.running:
                    break
                tick = self.tick(outcome)
                self.in_worker = True
                try:
                    if self.work is not None:
                        self.work(self, tick)
                except (SystemExit, KeyboardInterrupt) as e:
                    tick.outcome, tick.error = 'aborted', e
                    self.stop(type(e).__name__)
                finally:
                    self.in_worker = False
                hooks.after_tick(self, tick)
                if not self.running:
                    break
                if self.woken:
                    self.woken = 0
                    hooks.after_wakeup(self)
            else:
                self.stop('Exit')
        finally:
            self.running = False
            hooks.after_loop(self)

    def __repr__(self):
        return f'<FakeLoop {self.name}>'


class Recorder(Middleware):
    """A middleware that records every hook called on it, as (hook, name):
    the name of the loop, or None for the process's hooks.

    Loops call it from their threads: list.append is atomic.
    """

    def __init__(self, calls=None):
        self.calls = [] if calls is None else calls

    def before_process(self, process):
        self.calls.append(('before_process', None))

    def before_loop(self, loop):
        self.calls.append(('before_loop', loop.name))

    def before_tick(self, loop):
        self.calls.append(('before_tick', loop.name))

    def after_tick(self, loop, tick):
        self.calls.append(('after_tick', loop.name))

    def after_wakeup(self, loop):
        self.calls.append(('after_wakeup', loop.name))

    def after_loop(self, loop):
        self.calls.append(('after_loop', loop.name))

    def after_process(self, process):
        self.calls.append(('after_process', None))

    def of(self, name):
        """The hooks called for the loop `name`, in order."""
        return [hook for hook, of in self.calls if of == name]


def root(test):
    """The root object of a new FileStorage in a temporary directory, in a
    connection of the calling thread; all gone when `test` ends."""
    directory = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, directory)
    db = ZODB.DB(os.path.join(directory, 'Data.fs'))
    test.addCleanup(db.close)
    connection = db.open()
    test.addCleanup(connection.close)
    test.addCleanup(transaction.abort)
    return connection.root()
