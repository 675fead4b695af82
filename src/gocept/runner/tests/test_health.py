"""Bounded life and health signals: limits, heartbeat file, sd_notify."""

import decimal
import fractions
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import time
import unittest

import transaction
import ZODB

import gocept.runner
from gocept.runner import assembly
from gocept.runner import systemd
from gocept.runner import testing
from gocept.runner.config import ConfigurationError
from gocept.runner.limits import resident_memory


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


class LimitTests(LoopTest):

    # Limits that are not a positive number (of ticks: a whole one); with
    # max_runtime 0 no tick would ever run.
    # (A Decimal cannot be added to the float of a time.)
    BAD = [('max_ticks', 0), ('max_ticks', -1), ('max_ticks', 1.5),
           ('max_ticks', True), ('max_ticks', '5'),
           ('max_runtime', 0), ('max_runtime', -1), ('max_runtime', math.nan),
           ('max_runtime', '60'), ('max_runtime', decimal.Decimal(5)),
           ('max_memory', 0), ('max_memory', -1), ('max_memory', math.nan)]

    def test_a_limit_that_is_not_a_positive_number_is_refused(self):
        for name, value in self.BAD:
            with self.subTest(name=name, value=value):
                with self.assertRaises(ConfigurationError) as raised:
                    self.loop(**{name: value})
                self.assertRegex(
                    str(raised.exception),
                    f'^{name} must be a .* above 0, not'
                    f' {re.escape(repr(value))}$')
        self.assertEqual([], self.ticks)

    def test_positive_numbers_are_limits(self):
        self.loop(max_ticks=1, max_runtime=0.001, max_memory=1)
        self.loop(max_ticks=3.0, max_runtime=fractions.Fraction(1, 2),
                  max_memory=5e8)
        self.loop(max_runtime=math.inf)

    def test_max_ticks(self):
        loop = self.loop(max_ticks=5)
        with self.assertLogs('gocept.runner', logging.INFO) as logs:
            loop.run()
        self.assertEqual('max_ticks', loop.stopped_because)
        self.assertEqual(5, self.root['count'])
        self.assertEqual(
            ['Worker LoopTest.count reached max_ticks (5), stopping.'],
            [r.getMessage() for r in logs.records])

    def test_max_runtime_ends_a_long_sleep(self):
        loop = self.loop(ticks=3600, max_runtime=0.3)
        started = time.monotonic()
        with self.assertLogs('gocept.runner', logging.INFO):
            loop.run()
        self.assertEqual('max_runtime', loop.stopped_because)
        self.assertEqual(1, self.root['count'])
        self.assertLess(time.monotonic() - started, 2)
        self.assertGreaterEqual(time.monotonic() - started, 0.3)

    def test_max_memory(self):
        loop = self.loop(max_memory=resident_memory() * 4, max_ticks=3)
        with self.assertLogs('gocept.runner', logging.INFO):
            loop.run()
        self.assertEqual('max_ticks', loop.stopped_because)
        loop = self.loop(max_memory=resident_memory() // 2)
        with self.assertLogs('gocept.runner', logging.INFO) as logs:
            loop.run()
        self.assertEqual('max_memory', loop.stopped_because)
        self.assertEqual(4, self.root['count'])
        self.assertIn('reached max_memory', logs.records[0].getMessage())

    def test_the_first_reason_is_kept(self):
        def worker():
            self.count()
            return gocept.runner.Exit
        loop = gocept.runner.MainLoop(self.root, 0, worker, max_ticks=1)
        loop.run()
        self.assertEqual('Exit', loop.stopped_because)

    def test_resident_memory_is_the_rss_in_bytes(self):
        before = resident_memory()
        ballast = bytearray(50 * 1024 * 1024)
        ballast[::4096] = b'x' * len(ballast[::4096])
        self.assertGreater(resident_memory(), before + 40 * 1024 * 1024)


class RefusedLimitTests(unittest.TestCase):
    """A limit that is not a positive number ends a run before anything is
    set up."""

    def test_the_decorators_and_run(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        conf = testing.write_zope_conf(directory)
        ran = []

        def work():
            ran.append(1)

        for decorator in [gocept.runner.appmain(max_runtime=0),
                          gocept.runner.once(max_runtime=0),
                          gocept.runner.appmain(max_ticks=0),
                          gocept.runner.once(max_memory=-1)]:
            with self.subTest(decorator=decorator.options):
                with self.assertRaises(ConfigurationError):
                    decorator(work)(None, conf)
        with self.assertRaises(ConfigurationError):
            assembly.run_worker(work, None, conf, ticks=1, max_runtime=0)
        self.assertEqual([], ran)
        self.assertFalse(os.path.exists(os.path.join(directory, 'Data.fs')))


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


class SystemdTests(LoopTest):

    def listen(self, address):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(address)
        sock.settimeout(5)
        self.set_notify_socket(
            address if address[0] != '\0' else '@' + address[1:])
        return sock

    def set_notify_socket(self, value):
        old = os.environ.get('NOTIFY_SOCKET')
        os.environ['NOTIFY_SOCKET'] = value
        if old is None:
            self.addCleanup(os.environ.pop, 'NOTIFY_SOCKET')
        else:
            self.addCleanup(os.environ.__setitem__, 'NOTIFY_SOCKET', old)

    def received(self, sock):
        messages = []
        sock.setblocking(False)
        try:
            while True:
                messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages

    def test_the_loop_notifies_ready_watchdog_and_stopping(self):
        sock = self.listen(f'{self.dir}/notify')
        self.loop(max_ticks=3).run()
        self.assertEqual(
            ['READY=1', 'WATCHDOG=1', 'WATCHDOG=1', 'WATCHDOG=1',
             'STOPPING=1'], self.received(sock))

    def test_an_abstract_socket(self):
        name = f'\0gocept.runner.test.{os.getpid()}'
        sock = self.listen(name)
        self.assertTrue(systemd.notify('READY=1'))
        self.assertEqual(['READY=1'], self.received(sock))

    def test_without_notify_socket_nothing_is_sent(self):
        self.set_notify_socket('')
        self.assertFalse(systemd.notify('READY=1'))

    def test_a_socket_that_is_gone_does_not_stop_the_loop(self):
        self.set_notify_socket(f'{self.dir}/gone')
        with self.assertLogs('gocept.runner.systemd', logging.DEBUG) as logs:
            loop = self.loop(max_ticks=2)
            loop.run()
        self.assertEqual('max_ticks', loop.stopped_because)
        self.assertEqual(4, len(logs.records))
        self.assertIn("Cannot notify '/", logs.records[0].getMessage())
