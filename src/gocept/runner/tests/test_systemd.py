"""Telling systemd how the service is doing, on a real unix datagram
socket."""

import logging
import os
import shutil
import socket
import tempfile
import unittest

from gocept.runner import systemd


class NotifySocket:
    """A socket that listens as systemd's does, named by NOTIFY_SOCKET for
    the test (a mixin of a TestCase)."""

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


class NotifyTest(NotifySocket, unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def test_an_abstract_socket(self):
        name = f'\0gocept.runner.test.{os.getpid()}'
        sock = self.listen(name)
        self.assertTrue(systemd.notify('READY=1'))
        self.assertEqual(['READY=1'], self.received(sock))

    def test_without_notify_socket_nothing_is_sent(self):
        self.set_notify_socket('')
        self.assertFalse(systemd.notify('READY=1'))

    def test_the_socket_is_connected_once_and_kept(self):
        sock = self.listen(f'{self.dir}/notify')
        notify = systemd.Notifier()
        self.addCleanup(notify.close)
        self.assertTrue(notify('READY=1'))
        connected = notify.socket
        self.assertTrue(notify('WATCHDOG=1'))
        self.assertIs(connected, notify.socket)
        self.assertEqual(['READY=1', 'WATCHDOG=1'], self.received(sock))
        notify.close()
        self.assertIsNone(notify.socket)
        notify.close()

    def test_a_supervisor_that_went_away_and_came_back(self):
        path = f'{self.dir}/notify'
        sock = self.listen(path)
        notify = systemd.Notifier()
        self.addCleanup(notify.close)
        self.assertTrue(notify('READY=1'))
        sock.close()
        os.remove(path)
        with self.assertLogs('gocept.runner.systemd', logging.DEBUG) as logs:
            self.assertFalse(notify('WATCHDOG=1'))
        self.assertIsNone(notify.socket)
        self.assertRegex(logs.records[0].getMessage(),
                         f"^Cannot notify '{path}' of 'WATCHDOG=1': ")
        sock = self.listen(path)
        self.assertTrue(notify('STOPPING=1'))
        self.assertEqual(['STOPPING=1'], self.received(sock))

    def test_without_notify_socket_no_socket_is_made(self):
        self.set_notify_socket('')
        notify = systemd.Notifier()
        self.assertIsNone(notify.address)
        self.assertFalse(notify('READY=1'))
        self.assertIsNone(notify.socket)
