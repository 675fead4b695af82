"""Telling systemd how the service is doing (sd_notify)."""

import logging
import os
import socket


log = logging.getLogger(__name__)


class Notifier:
    """Sends states to the socket named by NOTIFY_SOCKET (when created).

    Without NOTIFY_SOCKET it sends nothing.  The socket is connected once
    and kept, as a loop notifies on every tick; one that cannot be reached
    is logged at DEBUG and tried again with the next state, so that a runner
    never stops because its supervisor went away.
    """

    def __init__(self):
        address = os.environ.get('NOTIFY_SOCKET') or None
        if address is not None and address.startswith('@'):
            # An abstract socket: its name starts with a NUL byte.
            address = '\0' + address[1:]
        self.address = address
        self.socket = None

    def __call__(self, state):
        """Send `state` (e.g. ``'READY=1'``); return whether it was sent."""
        if self.address is None:
            return False
        try:
            if self.socket is None:
                self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self.socket.connect(self.address)
            self.socket.sendall(state.encode('utf-8'))
        except OSError as e:
            log.debug('Cannot notify %r of %r: %s', self.address, state, e)
            self.close()
            return False
        return True

    def close(self):
        if self.socket is not None:
            self.socket.close()
            self.socket = None


def notify(state):
    """Send `state` once to the socket in NOTIFY_SOCKET, if there is one."""
    notifier = Notifier()
    try:
        return notifier(state)
    finally:
        notifier.close()
