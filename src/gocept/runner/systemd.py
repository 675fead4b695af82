"""Telling systemd how the service is doing (sd_notify)."""

import logging
import os
import socket


log = logging.getLogger(__name__)


def notify(state):
    """Send `state` (e.g. ``'READY=1'``) to the socket in NOTIFY_SOCKET.

    Returns whether it was sent.  Without NOTIFY_SOCKET nothing happens; a
    socket that cannot be reached is logged at DEBUG and otherwise ignored,
    so that a runner never stops because its supervisor went away.
    """
    address = os.environ.get('NOTIFY_SOCKET')
    if not address:
        return False
    if address.startswith('@'):
        # An abstract socket: its name starts with a NUL byte.
        address = '\0' + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode('utf-8'))
    except OSError as e:
        log.debug('Cannot notify %r of %r: %s', address, state, e)
        return False
    return True
