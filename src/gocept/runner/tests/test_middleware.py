"""The hooks of a run's life: Middleware, and Hooks, which calls them."""

import inspect
import logging
import unittest

import gocept.runner
from gocept.runner import middleware
from gocept.runner.middleware import Hooks
from gocept.runner.middleware import Middleware
from gocept.runner.tests.fakeloop import FakeLoop
from gocept.runner.tests.fakeloop import Recorder
from gocept.runner.tests.fakeloop import root


class Failing(Middleware):
    """Raises in the hooks named `hooks`."""

    def __init__(self, *hooks, error=RuntimeError):
        self.hooks = hooks
        self.error = error
        self.calls = 0

    def fail(self, hook):
        self.calls += 1
        if hook in self.hooks:
            raise self.error(f'{hook} fails')

    def before_loop(self, loop):
        self.fail('before_loop')

    def before_tick(self, loop):
        self.fail('before_tick')

    def after_tick(self, loop, tick):
        self.fail('after_tick')

    def after_loop(self, loop):
        self.fail('after_loop')

    def __repr__(self):
        return f'<Failing {", ".join(self.hooks)}>'


class Named(Middleware):
    """Records its `name` in `calls` after each tick."""

    def __init__(self, name, calls):
        self.name = name
        self.calls = calls

    def after_tick(self, loop, tick):
        self.calls.append(self.name)


class MiddlewareTest(unittest.TestCase):

    def test_every_hook_of_the_base_class_does_nothing(self):
        loop, tick = FakeLoop(), FakeLoop().tick()
        base = Middleware()
        self.assertIsNone(base.before_process(object()))
        self.assertIsNone(base.before_loop(loop))
        self.assertIsNone(base.before_tick(loop))
        self.assertIsNone(base.after_tick(loop, tick))
        self.assertIsNone(base.after_wakeup(loop))
        self.assertIsNone(base.after_loop(loop))
        self.assertIsNone(base.after_process(object()))

    def test_hooks_calls_every_hook_of_the_base_class_but_one(self):
        hooks = {name for name, _ in inspect.getmembers(
            Middleware, inspect.isfunction)}
        self.assertEqual(hooks - {'before_process'}, set(middleware.HOOKS))


class HooksTest(unittest.TestCase):

    def test_each_hook_is_called_in_the_order_of_the_middleware(self):
        calls = []
        hooks = Hooks([Recorder(calls), Middleware(), Named('second', calls)])
        loop = FakeLoop('a')
        hooks.before_loop(loop)
        hooks.after_tick(loop, loop.tick())
        hooks.after_loop(loop)
        self.assertEqual(
            [('before_loop', 'a'), ('after_tick', 'a'), 'second',
             ('after_loop', 'a')], calls)

    def test_a_failing_hook_is_an_error_once_then_debug_and_the_rest_goes_on(
            self):
        failing, recorder = Failing('after_tick'), Recorder()
        hooks = Hooks([failing, recorder])
        loop = FakeLoop('a')
        with self.assertLogs('gocept.runner.middleware', 'DEBUG') as logs:
            for _ in range(3):
                hooks.after_tick(loop, loop.tick())
        self.assertEqual(['after_tick'] * 3, recorder.of('a'))
        self.assertEqual(
            ['ERROR', 'DEBUG', 'DEBUG'], [r.levelname for r in logs.records])
        for record in logs.records:
            self.assertEqual('Error in after_tick of <Failing after_tick>,'
                             ' going on', record.getMessage())
            self.assertIn('RuntimeError: after_tick fails',
                          logging.Formatter().formatException(
                              record.exc_info))

    def test_each_middleware_and_hook_has_its_first_error(self):
        one, other = Failing('after_tick', 'after_loop'), Failing('after_tick')
        hooks = Hooks([one, other])
        loop = FakeLoop()
        with self.assertLogs('gocept.runner.middleware', 'DEBUG') as logs:
            hooks.after_tick(loop, loop.tick())
            hooks.after_tick(loop, loop.tick())
            hooks.after_loop(loop)
        self.assertEqual(
            [('ERROR', 'after_tick', one), ('ERROR', 'after_tick', other),
             ('DEBUG', 'after_tick', one), ('DEBUG', 'after_tick', other),
             ('ERROR', 'after_loop', one)],
            [(r.levelname, r.args[0], r.args[1]) for r in logs.records])

    def test_before_loop_raises(self):
        recorder = Recorder()
        hooks = Hooks([Failing('before_loop'), recorder])
        with self.assertRaises(RuntimeError):
            hooks.before_loop(FakeLoop('a'))
        self.assertEqual([], recorder.calls)

    def test_what_is_no_exception_goes_through(self):
        hooks = Hooks([Failing('after_tick', error=KeyboardInterrupt)])
        loop = FakeLoop()
        with self.assertRaises(KeyboardInterrupt):
            hooks.after_tick(loop, loop.tick())


class LoopTest(unittest.TestCase):
    """A middleware that fails does not end the loop, but in before_loop."""

    def test_a_fake_loop(self):
        failing = Failing('before_tick', 'after_tick', 'after_loop')
        loop = FakeLoop('a', [failing], outcomes=['committed'] * 4)
        with self.assertLogs('gocept.runner.middleware', 'DEBUG') as logs:
            loop()
        self.assertEqual('Exit', loop.stopped_because)
        self.assertEqual(4, len(loop.ticks))
        self.assertEqual(3, len([r for r in logs.records
                                 if r.levelname == 'ERROR']))

    def test_a_main_loop(self):
        app = root(self)
        ticks = []

        def work():
            ticks.append(1)
        failing = Failing('before_tick', 'after_tick')
        loop = gocept.runner.MainLoop(app, 0, work, max_ticks=5,
                                      middleware=[failing])
        with self.assertLogs('gocept.runner', 'DEBUG') as logs:
            loop()
        self.assertEqual('max_ticks', loop.stopped_because)
        self.assertEqual(5, len(ticks))
        self.assertEqual(
            ['Error in before_tick of <Failing before_tick, after_tick>,'
             ' going on',
             'Error in after_tick of <Failing before_tick, after_tick>,'
             ' going on'],
            [r.getMessage() for r in logs.records
             if r.levelname == 'ERROR'])

    def test_a_main_loop_whose_before_loop_fails(self):
        ticks = []
        loop = gocept.runner.MainLoop(
            root(self), 0, lambda: ticks.append(1),
            middleware=[Failing('before_loop')])
        with self.assertRaises(RuntimeError):
            loop()
        self.assertEqual([], ticks)
