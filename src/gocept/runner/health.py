"""Telling supervisors that the loop is alive: a heartbeat file, systemd."""

import logging
import os

from gocept.runner import systemd
from gocept.runner.config import ConfigurationError
from gocept.runner.middleware import Middleware


log = logging.getLogger('gocept.runner.runner')


class Heartbeat(Middleware):
    """Updates the modification time of the file `path` after every tick.

    A file that cannot be written when the loop starts is a configuration
    error; one that fails later (its directory removed, a full disk) is
    logged once as a WARNING, and the loop goes on.
    """

    def __init__(self, path):
        self.path = path
        self.failing = False

    def before_loop(self, loop):
        try:
            self.touch()
        except OSError as e:
            raise ConfigurationError(
                f'Cannot write the heartbeat file {self.path}:'
                f' {e.strerror}') from None

    def after_tick(self, loop, tick):
        try:
            self.touch()
        except OSError as e:
            if not self.failing:
                log.warning('Cannot write the heartbeat file %s: %s',
                            self.path, e.strerror)
            self.failing = True
        else:
            if self.failing:
                log.info('The heartbeat file %s is written again', self.path)
            self.failing = False

    def touch(self):
        with open(self.path, 'a'):
            pass
        os.utime(self.path)


class SystemdNotify(Middleware):
    """Notifies systemd (when NOTIFY_SOCKET is set): ready, alive, stopping.
    """

    def __init__(self):
        self.notify = systemd.Notifier()

    def before_loop(self, loop):
        self.notify('READY=1')

    def after_tick(self, loop, tick):
        self.notify('WATCHDOG=1')

    def after_loop(self, loop):
        self.notify('STOPPING=1')
        self.notify.close()
