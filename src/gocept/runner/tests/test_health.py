"""Telling supervisors that the process is alive: the heartbeat file and
systemd's notifications."""

import logging
import os
import shutil
import tempfile
import time
import unittest

import transaction
import ZODB

import gocept.runner
from gocept.runner.config import ConfigurationError
from gocept.runner.health import Heartbeat
from gocept.runner.health import Rounds
from gocept.runner.health import SystemdNotify
from gocept.runner.process import Process
from gocept.runner.tests.fakeloop import FakeLoop
from gocept.runner.tests.test_systemd import NotifySocket


class LoopTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        db = ZODB.DB(f'{self.dir}/Data.fs')
        self.addCleanup(db.close)
        conn = db.open()
        self.addCleanup(conn.close)
        self.addCleanup(transaction.abort)
        self.root = conn.root()
        self.ticks = []

    def count(self):
        self.root['count'] = self.root.get('count', 0) + 1
        self.ticks.append(time.monotonic())

    def loop(self, ticks=0, **options):
        return gocept.runner.MainLoop(self.root, ticks, self.count, **options)


class HeartbeatTests(LoopTest):

    def test_the_mtime_of_the_heartbeat_file_is_updated_after_each_tick(self):
        heartbeat = f'{self.dir}/heartbeat'
        touched = []

        def worker():
            # Set the mtime back; it must be new again at the next tick.
            touched.append(os.stat(heartbeat).st_mtime > 0)
            os.utime(heartbeat, (0, 0))
        gocept.runner.MainLoop(self.root, 0, worker, max_ticks=3,
                               heartbeat=heartbeat).run()
        self.assertEqual([True, True, True], touched)
        self.assertGreater(os.stat(heartbeat).st_mtime, 0)

    def test_a_heartbeat_file_that_cannot_be_written_is_an_error(self):
        loop = self.loop(heartbeat=f'{self.dir}/no/such/dir/heartbeat')
        with self.assertRaises(gocept.runner.ConfigurationError) as e:
            loop.run()
        self.assertEqual(
            f'Cannot write the heartbeat file {self.dir}/no/such/dir/'
            'heartbeat: No such file or directory', str(e.exception))
        self.assertEqual([], self.ticks)


class SystemdTests(NotifySocket, LoopTest):

    def test_the_loop_notifies_ready_watchdog_and_stopping(self):
        sock = self.listen(f'{self.dir}/notify')
        self.loop(max_ticks=3).run()
        self.assertEqual(
            ['READY=1', 'WATCHDOG=1', 'WATCHDOG=1', 'WATCHDOG=1',
             'STOPPING=1'], self.received(sock))

    def test_a_socket_that_is_gone_does_not_stop_the_loop(self):
        self.set_notify_socket(f'{self.dir}/gone')
        with self.assertLogs('gocept.runner.systemd', logging.DEBUG) as logs:
            loop = self.loop(max_ticks=2)
            loop.run()
        self.assertEqual('max_ticks', loop.stopped_because)
        self.assertEqual(4, len(logs.records))
        self.assertIn("Cannot notify '/", logs.records[0].getMessage())


def process_of(*loops):
    """A Process of fake `loops`, which run."""
    process = Process(loops)
    for loop in loops:
        loop.process = process
        loop.running = True
    return process


class RoundsTest(unittest.TestCase):

    def test_a_single_loop_completes_a_round_with_each_tick(self):
        rounds = Rounds()
        rounds.begin(['a'])
        self.assertEqual([True] * 3, [rounds.ticked('a') for _ in range(3)])

    def test_a_round_is_complete_when_every_loop_has_ticked(self):
        rounds = Rounds()
        rounds.begin(['a', 'b', 'c'])
        self.assertEqual([False, False, False, True, False],
                         [rounds.ticked(loop) for loop in 'aabca'])
        self.assertEqual([False, True], [rounds.ticked(loop) for loop in 'bc'])

    def test_a_loop_that_ends_leaves_the_rounds(self):
        rounds = Rounds()
        rounds.begin(['a', 'b', 'c'])
        self.assertFalse(rounds.ticked('a'))
        self.assertFalse(rounds.ended('b'))
        self.assertTrue(rounds.ended('c'))  # a has ticked
        self.assertTrue(rounds.ticked('a'))
        self.assertFalse(rounds.ended('a'))  # none is left

    def test_a_loop_that_starts_again_joins_them(self):
        rounds = Rounds()
        rounds.begin(['a', 'b'])
        rounds.ended('b')
        self.assertTrue(rounds.ticked('a'))
        rounds.started('b')
        self.assertFalse(rounds.ticked('a'))
        self.assertTrue(rounds.ticked('b'))


class HeartbeatTest(unittest.TestCase):
    """Heartbeat on fake loops, with a real file."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.path = os.path.join(self.dir, 'var', 'heartbeat')
        os.mkdir(os.path.dirname(self.path))
        self.a, self.b = FakeLoop('a'), FakeLoop('b')
        self.heartbeat = Heartbeat(self.path)
        self.heartbeat.before_process(process_of(self.a, self.b))
        self.heartbeat.before_loop(self.a)
        self.heartbeat.before_loop(self.b)

    def beaten(self):
        """Whether the file was touched since the last call."""
        beaten = os.stat(self.path).st_mtime > 0
        os.utime(self.path, (0, 0))
        return beaten

    def test_the_process_writes_it_when_it_starts(self):
        self.assertTrue(self.beaten())
        heartbeat = Heartbeat(os.path.join(self.dir, 'no', 'heartbeat'))
        with self.assertRaises(ConfigurationError) as raised:
            heartbeat.before_process(process_of(FakeLoop()))
        self.assertEqual(
            f'Cannot write the heartbeat file {self.dir}/no/heartbeat:'
            ' No such file or directory', str(raised.exception))

    def test_it_beats_when_every_loop_has_ended_a_tick(self):
        self.beaten()
        beats = []
        for loop in self.a, self.a, self.b, self.b:
            self.heartbeat.after_tick(loop, loop.tick())
            beats.append(self.beaten())
        self.assertEqual([False, False, True, False], beats)
        self.heartbeat.after_loop(self.a)
        self.assertTrue(self.beaten())
        self.heartbeat.after_tick(self.b, self.b.tick())
        self.assertTrue(self.beaten())

    def test_a_file_that_cannot_be_written_later_is_one_warning(self):
        shutil.rmtree(os.path.dirname(self.path))
        with self.assertLogs('gocept.runner.health', 'INFO') as logs:
            for _ in range(3):
                self.heartbeat.beat()
            os.mkdir(os.path.dirname(self.path))
            self.heartbeat.beat()
            self.heartbeat.beat()
        self.assertEqual(
            [('WARNING', f'Cannot write the heartbeat file {self.path}: No'
                         ' such file or directory'),
             ('INFO', f'The heartbeat file {self.path} is written again')],
            [(r.levelname, r.getMessage()) for r in logs.records])
        self.assertTrue(self.beaten())


class SystemdNotifyTest(NotifySocket, unittest.TestCase):
    """SystemdNotify on fake loops, with a real socket."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def test_ready_when_every_loop_runs_watchdog_after_each_round(self):
        sock = self.listen(f'{self.dir}/notify')
        loops = [FakeLoop(name) for name in 'abc']
        process = process_of(*loops)
        notify = SystemdNotify()
        self.addCleanup(notify.notify.close)
        notify.before_process(process)
        sent = []
        for loop in loops:
            notify.before_loop(loop)
            sent.append(self.received(sock))
        self.assertEqual([[], [], ['READY=1']], sent)
        for loop in [*loops, *loops[:2]]:
            notify.after_tick(loop, loop.tick())
            sent.append(self.received(sock))
        self.assertEqual([[], [], ['WATCHDOG=1'], [], []], sent[3:])
        # One that ends may complete a round; one that starts again is no
        # news.
        notify.after_loop(loops[2])
        self.assertEqual(['WATCHDOG=1'], self.received(sock))
        notify.before_loop(loops[2])
        self.assertEqual([], self.received(sock))
        notify.after_process(process)
        self.assertEqual(['STOPPING=1'], self.received(sock))

    def test_a_process_of_one_fake_loop(self):
        sock = self.listen(f'{self.dir}/notify')
        loop = FakeLoop(outcomes=['committed', 'error'])
        Process([loop], [SystemdNotify()]).run()
        self.assertEqual(['READY=1', 'WATCHDOG=1', 'WATCHDOG=1',
                          'STOPPING=1'], self.received(sock))

    def test_without_notify_socket_it_does_nothing(self):
        self.set_notify_socket('')
        loop = FakeLoop()
        Process([loop], [SystemdNotify()]).run()
        self.assertEqual('Exit', loop.stopped_because)
