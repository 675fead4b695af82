"""A process runs main loops: one in the calling thread, several in
threads; on a FileStorage on disk."""

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
import unittest
import unittest.mock

import persistent.mapping
import transaction

import gocept.runner
from gocept.runner import process
from gocept.runner import signals
from gocept.runner.config import ConfigurationError
from gocept.runner.health import Heartbeat
from gocept.runner.health import SystemdNotify
from gocept.runner.limits import Limits
from gocept.runner.middleware import Middleware
from gocept.runner.process import Process
from gocept.runner.tests.fakeloop import FakeLoop
from gocept.runner.tests.fakeloop import Recorder
from gocept.runner.tests.fakeloop import root
from gocept.runner.tests.test_systemd import NotifySocket


TIMEOUT = 30


class Work:
    """A worker that counts its ticks in an object of its own (its commits
    do not conflict with another's) and notes where it ran; `then(work)`,
    if given, runs after each tick's count."""

    def __init__(self, name, then=None):
        self.__qualname__ = name
        self.then = then
        self.loop = None
        self.threads = []
        self.connections = []
        self.ticked = threading.Event()

    def __call__(self):
        app = self.loop.app
        app[self.__qualname__]['count'] += 1
        self.threads.append(threading.current_thread())
        self.connections.append(app._p_jar)
        self.ticked.set()
        if self.then is not None:
            return self.then(self)


class StartFails(Middleware):
    """A loop's middleware whose before_loop fails `times` times."""

    def __init__(self, times):
        self.times = times
        self.failed = threading.Event()

    def before_loop(self, loop):
        if self.times:
            self.times -= 1
            self.failed.set()
            raise RuntimeError('cannot start')


class ProcessTest(unittest.TestCase):

    def setUp(self):
        self.app = root(self)

    def loop(self, name, ticks=0, then=None, **options):
        self.app[name] = persistent.mapping.PersistentMapping(count=0)
        transaction.commit()
        work = Work(name, then)
        work.loop = gocept.runner.MainLoop(self.app, ticks, work, **options)
        return work.loop

    def counts(self):
        """The counts of the loops that ticked."""
        transaction.abort()  # see what the loops committed
        return {name: counter['count'] for name, counter in self.app.items()
                if counter['count']}

    def run_in_thread(self, runner, started=()):
        """Run `runner` (a Process) in a thread; return it when it has
        ended.  `started` are Events to wait for before that."""
        thread = threading.Thread(target=runner.run)
        thread.start()
        self.addCleanup(thread.join, TIMEOUT)
        # A test that failed leaves no loop running.
        self.addCleanup(lambda: [loop.stop() for loop in runner.loops])
        for event in started:
            self.assertTrue(event.wait(TIMEOUT))
        return thread

    def join(self, thread):
        thread.join(TIMEOUT)
        self.assertFalse(thread.is_alive(), 'the process did not end')


class OneLoopTest(ProcessTest):

    def test_runs_in_the_calling_thread_as_its_main_loop(self):
        seen = []

        def then(work):
            seen.append((work.loop.process, work.loop.process.main_loop))
        loop = self.loop('a', then=then, max_ticks=2)
        runner = Process([loop])
        self.assertIs(runner, runner.run())
        self.assertEqual([threading.main_thread()] * 2, loop.worker.threads)
        self.assertEqual([(runner, loop)] * 2, seen)
        self.assertEqual([self.app._p_jar] * 2, loop.worker.connections)
        self.assertEqual({'a': 2}, self.counts())
        self.assertIsNone(loop.process)
        self.assertIsNone(runner.main_loop)
        self.assertFalse(runner.running)
        self.assertIsNone(runner.stopped_because)
        self.assertEqual('max_ticks', loop.stopped_because)

    def test_outside_the_main_thread_it_is_no_main_loop(self):
        seen = []

        def then(work):
            seen.append(work.loop.process.main_loop)
            return gocept.runner.Exit
        loop = self.loop('a', then=then)
        runner = Process([loop])
        self.join(self.run_in_thread(runner))
        self.assertEqual([None], seen)
        self.assertEqual('Exit', loop.stopped_because)

    def test_its_error_goes_through_and_the_process_ends(self):
        recorder = Recorder()
        loop = self.loop('a', max_ticks=1, middleware=[StartFails(1)])
        runner = Process([loop], [recorder])
        with self.assertRaises(RuntimeError):
            runner.run()
        self.assertEqual([], loop.worker.threads)
        hooks = [hook for hook, _ in recorder.calls]
        self.assertEqual(['before_process', 'before_loop'], hooks[:2])
        self.assertEqual('after_process', hooks[-1])
        self.assertNotIn('before_tick', hooks)
        self.assertFalse(runner.running)
        self.assertIsNone(loop.process)

    def test_a_fake_loop(self):
        recorder = Recorder()
        loop = FakeLoop('a', outcomes=['committed'] * 2)
        Process([loop], [recorder]).run()
        self.assertEqual(['before_loop', 'before_tick', 'after_tick',
                          'before_tick', 'after_tick', 'after_loop'],
                         recorder.of('a'))
        self.assertEqual(['before_process', 'after_process'],
                         recorder.of(None))


class SeveralLoopsTest(ProcessTest):

    def test_each_runs_in_a_thread_and_connection_of_its_own(self):
        # All three are in a tick at once: a connection that one loop has
        # closed is not another's.
        together = threading.Barrier(3, timeout=TIMEOUT)

        def then(work):
            together.wait()
        loops = [self.loop(name, max_ticks=2, then=then) for name in 'abc']
        runner = Process(loops)
        runner.run()
        threads = {loop.name: set(loop.worker.threads) for loop in loops}
        self.assertEqual(
            {name: {f'gocept.runner {name}'} for name in 'abc'},
            {name: {t.name for t in found} for name, found in threads.items()})
        self.assertEqual(3, len(set.union(*threads.values())))
        connections = {c for loop in loops for c in loop.worker.connections}
        self.assertEqual(3, len(connections))
        self.assertNotIn(self.app._p_jar, connections)
        self.assertEqual({'a': 2, 'b': 2, 'c': 2}, self.counts())
        self.assertIsNone(runner.stopped_because)
        self.assertEqual(['max_ticks'] * 3,
                         [loop.stopped_because for loop in loops])
        # Each loop's connection is closed when its thread ends.
        self.assertEqual([None] * 3,
                         [c.opened for c in connections])
        self.assertEqual([None] * 3, [loop.process for loop in loops])

    def test_the_pool_has_a_connection_for_each_and_the_main_thread(self):
        db = self.app._p_jar.db()
        db.setPoolSize(1)
        Process([self.loop(name, max_ticks=1) for name in 'abc']).run()
        self.assertEqual(4, db.getPoolSize())

    def test_the_process_ends_when_the_last_loop_has_ended(self):
        once = self.loop('once', once=True)
        three = self.loop('three', max_ticks=3)
        runner = Process([once, three])
        runner.run()
        self.assertEqual({'once': 1, 'three': 3}, self.counts())
        self.assertEqual(('once', 'max_ticks'),
                         (once.stopped_because, three.stopped_because))
        self.assertIsNone(runner.stopped_because)

    def test_stop_ends_every_loop_at_once(self):
        # They sleep an hour after each tick.
        loops = [self.loop(name, ticks=3600) for name in 'abc']
        runner = Process(loops)
        thread = self.run_in_thread(
            runner, [loop.worker.ticked for loop in loops])
        runner.stop()
        self.join(thread)
        self.assertEqual('stop', runner.stopped_because)
        self.assertEqual(['stop'] * 3,
                         [loop.stopped_because for loop in loops])
        self.assertEqual({'a': 1, 'b': 1, 'c': 1}, self.counts())

    def test_the_first_reason_to_stop_is_kept(self):
        def then(work):
            work.loop.process.stop('max_runtime')
            work.loop.process.stop('stop')
        loops = [self.loop('a', then=then), self.loop('b', ticks=3600)]
        runner = Process(loops)
        self.join(self.run_in_thread(runner))
        self.assertEqual('max_runtime', runner.stopped_because)
        self.assertEqual(['max_runtime'] * 2,
                         [loop.stopped_because for loop in loops])

    def test_wake_wakes_every_loop_which_sleeps_on(self):
        recorder = Recorder()
        loops = [self.loop(name, ticks=3600) for name in 'ab']
        runner = Process(loops, [recorder])
        thread = self.run_in_thread(
            runner, [loop.worker.ticked for loop in loops])
        runner.wake()
        deadline = time.monotonic() + TIMEOUT
        while len(recorder.of('a') + recorder.of('b')) < 8:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.01)
        self.assertTrue(all(loop.running for loop in loops))
        runner.stop()
        self.join(thread)
        for name in 'ab':
            self.assertEqual(['before_loop', 'before_tick', 'after_tick',
                              'after_wakeup', 'after_wakeup', 'after_loop'],
                             recorder.of(name))

    def test_tick_now_ends_a_loops_sleep_and_it_ticks(self):
        # Two loops that sleep an hour after each tick; b is told to tick.
        loops = [self.loop(name, ticks=3600) for name in 'ab']
        runner = Process(loops)
        thread = self.run_in_thread(
            runner, [loop.worker.ticked for loop in loops])
        loops[1].worker.ticked.clear()
        loops[1].tick_now()
        self.assertTrue(loops[1].worker.ticked.wait(TIMEOUT))
        runner.stop()
        self.join(thread)
        self.assertEqual({'a': 1, 'b': 2}, self.counts())

    def test_tick_now_in_a_tick_ends_the_sleep_after_it_at_once(self):
        def then(work):
            if len(work.threads) == 1:
                work.loop.tick_now()
        loop = self.loop('a', ticks=3600, then=then)
        runner = Process([loop, self.loop('b', ticks=3600)])
        thread = self.run_in_thread(runner)
        deadline = time.monotonic() + TIMEOUT
        while len(loop.worker.threads) < 2:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.01)
        # Told once, it ticked once more, and sleeps now.
        time.sleep(0.2)
        runner.stop()
        self.join(thread)
        self.assertEqual({'a': 2, 'b': 1}, self.counts())

    def test_a_failing_loop_starts_again_after_pauses_that_double(self):
        for name, value in (('RESTART_PAUSE', 0.01),
                            ('MAX_RESTART_PAUSE', 0.04)):
            self.addCleanup(setattr, process, name, getattr(process, name))
            setattr(process, name, value)
        failing = self.loop('failing', max_ticks=2,
                            middleware=[StartFails(4)])
        other = self.loop('other', max_ticks=2)
        with self.assertLogs('gocept.runner.process', 'ERROR') as logs:
            Process([failing, other]).run()
        self.assertEqual(
            [f'Worker failing failed; starting it again in {pause} seconds'
             for pause in (0.01, 0.02, 0.04, 0.04)],
            [r.getMessage() for r in logs.records])
        self.assertIn('RuntimeError: cannot start', logs.output[0])
        self.assertEqual({'failing': 2, 'other': 2}, self.counts())

    def test_a_loop_that_failed_is_not_started_again_once_stopped(self):
        self.addCleanup(setattr, process, 'RESTART_PAUSE',
                        process.RESTART_PAUSE)
        process.RESTART_PAUSE = 3600

        start_fails = StartFails(1)

        def then(work):
            # The other loop waits for its restart.
            self.assertTrue(start_fails.failed.wait(TIMEOUT))
            work.loop.process.stop()
        failing = self.loop('failing', middleware=[start_fails])
        other = self.loop('other', then=then)
        runner = Process([failing, other])
        with self.assertLogs('gocept.runner.process', 'ERROR'):
            self.join(self.run_in_thread(runner))
        self.assertEqual({'other': 1}, self.counts())

    # Were before_loop outside the try whose finally ends the loop, no
    # middleware would hear after_loop after a failing before_loop, and the
    # Heartbeat's rounds would wait for the failed loop as long as it waits
    # to start again (up to MAX_RESTART_PAUSE), while the others tick.
    def test_a_loop_that_failed_to_start_has_ended_for_the_middleware(self):
        self.addCleanup(setattr, process, 'RESTART_PAUSE',
                        process.RESTART_PAUSE)
        process.RESTART_PAUSE = 3600
        heartbeat = os.path.join(tempfile.mkdtemp(), 'heartbeat')
        self.addCleanup(shutil.rmtree, os.path.dirname(heartbeat))
        start_fails = StartFails(1)
        seen = []

        def then(work):
            self.assertTrue(start_fails.failed.wait(TIMEOUT))
            seen.append((failing.running, os.stat(heartbeat).st_mtime))
            os.utime(heartbeat, (0, 0))
            if len(seen) == 3:
                work.loop.process.stop()
        failing = self.loop('failing', middleware=[start_fails])
        other = self.loop('other', then=then)
        with self.assertLogs('gocept.runner.process', 'ERROR'):
            Process([failing, other], [Heartbeat(heartbeat)]).run()
        # Beaten at the start and after each of the other loop's ticks.
        self.assertEqual([False] * 3, [running for running, _ in seen])
        self.assertNotIn(0, [mtime for _, mtime in seen])


class MiddlewareTest(ProcessTest):
    """The process's own middleware."""

    def test_before_process_fails_before_any_tick(self):
        class Refuses(Middleware):
            def before_process(self, process):
                raise ConfigurationError('no')
        recorder = Recorder()
        loops = [self.loop(name, max_ticks=1) for name in 'ab']
        with self.assertRaises(ConfigurationError):
            Process(loops, [recorder, Refuses()]).run()
        self.assertEqual({}, self.counts())
        self.assertEqual(['before_process', 'after_process'],
                         [hook for hook, _ in recorder.calls])

    def test_an_error_after_the_process_is_logged_and_the_rest_goes_on(self):
        class Fails(Middleware):
            def after_process(self, process):
                raise RuntimeError('after')

            def __repr__(self):
                return '<Fails>'
        recorder = Recorder()
        runner = Process([self.loop('a', max_ticks=1)], [Fails(), recorder])
        with self.assertLogs('gocept.runner.process', 'ERROR') as logs:
            runner.run()
        self.assertEqual(['Error in after_process of <Fails>'],
                         [r.getMessage() for r in logs.records])
        self.assertEqual('after_process', recorder.calls[-1][0])

    def test_the_signals_come_first(self):
        class Looks(Middleware):
            def before_process(self, process):
                self.hooks = process.hooks()
        looks = Looks()
        Process([FakeLoop()], [looks]).run()
        self.assertEqual(2, len(looks.hooks))
        self.assertIsInstance(looks.hooks[0], signals.Signals)
        self.assertIs(looks, looks.hooks[1])

    def test_the_middleware_of_the_settings(self):
        def kinds(**settings):
            return [type(m) for m in process.middleware(**settings)]
        # Without NOTIFY_SOCKET, systemd's notifications have nothing to do.
        with mock_environ(NOTIFY_SOCKET=None):
            self.assertEqual([], kinds())
            self.assertEqual([Limits], kinds(max_runtime=5))
            self.assertEqual([Limits], kinds(max_memory=5))
            self.assertEqual([Heartbeat], kinds(heartbeat='h'))
        with mock_environ(NOTIFY_SOCKET='/run/notify'):
            self.assertEqual([SystemdNotify], kinds())
            self.assertEqual([Limits, Heartbeat, SystemdNotify],
                             kinds(max_memory=5, heartbeat='h'))
            limits, heartbeat, _ = process.middleware(
                max_runtime=5, max_memory=6, heartbeat='h')
        self.assertEqual((5, 6, None), (limits.max_runtime, limits.max_memory,
                                        limits.max_ticks))
        self.assertEqual('h', heartbeat.path)


@contextlib.contextmanager
def mock_environ(**variables):
    """The environment with `variables` set (None: unset) for a while."""
    with unittest.mock.patch.dict(os.environ):
        for name, value in variables.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield


class FailsAfterTick(Middleware):

    def after_tick(self, loop, tick):
        raise RuntimeError('fails')

    def __repr__(self):
        return '<FailsAfterTick>'


class SameMiddleware(NotifySocket):
    """The same middleware given to a process of LOOPS loops: one in the
    main thread (a single runner) or three in threads (a host).  What is
    not the same is said by the subclass."""

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        for signum in signal.SIGTERM, signal.SIGINT:
            self.addCleanup(signal.signal, signum, signal.getsignal(signum))

    def loops(self, ticks=0, then=None, max_ticks=1000, **options):
        # At most a thousand ticks: a test whose loops are not stopped
        # fails instead of running for ever.
        return [self.loop(name, ticks, then, max_ticks=max_ticks, **options)
                for name in 'abc'[:self.LOOPS]]

    def kill(self, work, signum):
        """Send `signum` to this process from the tick of `work`, and wait
        until the handler, which runs in the main thread, has stopped the
        process."""
        # Only if the process handles it: not to end the test run.
        self.assertIsNot(signal.SIG_DFL, signal.getsignal(signum))
        os.kill(os.getpid(), signum)
        deadline = time.monotonic() + TIMEOUT
        while work.loop.process.stopped_because is None:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.001)

    def test_every_hook_for_every_loop_the_heartbeat_and_systemd(self):
        sock = self.listen(f'{self.dir}/notify')
        heartbeat = os.path.join(self.dir, 'heartbeat')
        # The loops tick in step: each round of ticks is complete before
        # the next begins.
        in_step = threading.Barrier(self.LOOPS, timeout=TIMEOUT)

        def then(work):
            in_step.wait()
        loops = self.loops(then=then, max_ticks=3)
        recorder = Recorder()
        runner = Process(loops, [recorder, Heartbeat(heartbeat),
                                 SystemdNotify()])
        started = time.time()
        runner.run()
        for loop in loops:
            self.assertEqual(
                ['before_loop', *['before_tick', 'after_tick'] * 3,
                 'after_loop'], recorder.of(loop.name))
            self.assertEqual('max_ticks', loop.stopped_because)
            [thread] = set(loop.worker.threads)
            self.assertEqual(self.IN_MAIN_THREAD,
                             thread is threading.main_thread())
        self.assertEqual(['before_process', 'after_process'],
                         recorder.of(None))
        self.assertIsNone(runner.stopped_because)
        self.assertEqual({loop.name: 3 for loop in loops}, self.counts())
        self.assertGreaterEqual(os.stat(heartbeat).st_mtime, started - 1)
        self.assertEqual(['READY=1', *['WATCHDOG=1'] * 3, 'STOPPING=1'],
                         self.received(sock))

    def test_the_limits_of_the_process_stop_every_loop(self):
        loops = self.loops(ticks=0.01)
        runner = Process(loops, [Limits(max_runtime=0.2)])
        with self.assertLogs('gocept.runner', 'INFO') as logs:
            runner.run()
        self.assertEqual('max_runtime', runner.stopped_because)
        self.assertEqual(['max_runtime'] * self.LOOPS,
                         [loop.stopped_because for loop in loops])
        self.assertEqual(
            [f'{self.WHO} reached max_runtime (0.2), stopping.'],
            [r.getMessage() for r in logs.records])

    def test_a_stop_signal_stops_every_loop_after_its_tick(self):
        def then(work):
            if work.loop.name == 'a' and len(work.threads) == 2:
                self.kill(work, signal.SIGTERM)
        loops = self.loops(ticks=0.01, then=then)
        runner = Process(loops)
        with self.assertLogs('gocept.runner', 'INFO') as logs:
            runner.run()
        self.assertEqual(('signal', signal.SIGTERM),
                         (runner.stopped_because, runner.signal))
        self.assertEqual([('signal', signal.SIGTERM)] * self.LOOPS,
                         [(loop.stopped_because, loop.signal)
                          for loop in loops])
        self.assertEqual(['Received signal 15, terminating.'],
                         [r.getMessage() for r in logs.records])
        # Each tick that ran committed (a loop in a thread may have run
        # none before the signal).
        ticks = {loop.name: len(loop.worker.threads) for loop in loops}
        self.assertEqual({name: n for name, n in ticks.items() if n},
                         self.counts())
        self.assertEqual(2, self.counts()['a'])

    def test_SIGINT_stops_every_loop(self):
        ended = []

        def then(work):
            if work.loop.name == 'a':
                self.kill(work, signal.SIGINT)
                ended.append(True)
        loops = self.loops(ticks=0.01, then=then)
        runner = Process(loops)
        with self.assertLogs('gocept.runner', 'INFO'):
            runner.run()
        self.assertEqual(('signal', signal.SIGINT),
                         (runner.stopped_because, runner.signal))
        self.assertEqual(['signal'] * self.LOOPS,
                         [loop.stopped_because for loop in loops])
        # A worker in the main thread is interrupted, as by Ctrl-C.
        interrupted = self.IN_MAIN_THREAD
        self.assertEqual([] if interrupted else [True], ended)
        self.assertEqual(0 if interrupted else 1,
                         self.counts().get('a', 0))

    def test_a_failing_middleware_is_an_error_once_per_loop(self):
        loops = self.loops(max_ticks=3)
        with self.assertLogs('gocept.runner.middleware', 'DEBUG') as logs:
            Process(loops, [FailsAfterTick()]).run()
        self.assertEqual({loop.name: 3 for loop in loops}, self.counts())
        self.assertEqual(
            ['DEBUG'] * 2 * self.LOOPS + ['ERROR'] * self.LOOPS,
            sorted(r.levelname for r in logs.records))


class OneLoopMiddlewareTest(SameMiddleware, ProcessTest):

    LOOPS = 1
    IN_MAIN_THREAD = True
    WHO = 'Worker a'


class ThreeLoopsMiddlewareTest(SameMiddleware, ProcessTest):

    LOOPS = 3
    IN_MAIN_THREAD = False
    WHO = 'Host'
