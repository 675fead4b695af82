"""The main loop: one transaction per tick, until told to stop."""

import fcntl
import logging
import numbers
import os
import select
import signal
import threading
import time

import transaction
import zope.authentication.interfaces
import zope.component
import zope.component.hooks
import zope.component.interfaces
import zope.interface
import zope.security.interfaces
import zope.security.management
from ZODB.POSException import ConflictError

from gocept.runner.config import ConfigurationError


log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class _Exit:
    """A worker returns ``gocept.runner.Exit`` to end the main loop."""

    def __repr__(self):
        return 'gocept.runner.Exit'


Exit = _Exit()


@zope.interface.implementer(zope.security.interfaces.IParticipation)
class Participation:
    """The principal a tick runs as."""

    interaction = None

    def __init__(self, principal):
        self.principal = principal


class MainLoop:
    """Call `worker` once per tick, each time in a transaction of its own.

    `app` is set as the site while the loop runs (if it is a site).  Between
    ticks the loop sleeps `ticks` seconds, or as many as the worker
    returned.  It ends when the worker returns Exit or raises SystemExit or
    KeyboardInterrupt, on SIGTERM or SIGHUP (after the running tick has
    committed), or after one tick if `once` is true.  With a `principal` (an
    id, or a callable returning one) every tick runs in a security
    interaction of that principal.
    """

    def __init__(self, app, ticks, worker, principal=None, once=False):
        self.app = app
        self.ticks = ticks
        self.worker = worker
        self.principal = principal
        self.once = once
        self.running = False
        # Whether the last tick failed (worker error, failed commit).
        self.failed = False
        # The code of a SystemExit the worker raised, if it raised one.
        self.exit_code = None
        self._signal = None
        self._wakeup = self._wake = None

    def run(self):
        """Run ticks until the loop is told to stop."""
        principal = self.lookup_principal()
        old_site = zope.component.hooks.getSite()
        self.running = True
        self._wakeup, self._wake = os.pipe()
        for fd in self._wakeup, self._wake:
            fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK)
        handlers = self._install_signal_handlers()
        try:
            if zope.component.interfaces.ISite.providedBy(self.app):
                zope.component.hooks.setSite(self.app)
            while True:
                delay = self.tick(principal)
                self._log_signal()
                if self.once or not self.running:
                    break
                try:
                    self.sleep(delay)
                except KeyboardInterrupt:
                    break
                self._log_signal()
                if not self.running:
                    break
        finally:
            self.running = False
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            os.close(self._wakeup)
            os.close(self._wake)
            self._wakeup = self._wake = None
            zope.component.hooks.setSite(old_site)

    def lookup_principal(self):
        """The principal object to run ticks as, or None."""
        principal_id = self.principal
        if callable(principal_id):
            principal_id = principal_id()
        if principal_id is None:
            return None
        auth = zope.component.queryUtility(
            zope.authentication.interfaces.IAuthentication)
        if auth is None:
            raise ConfigurationError(
                f'Cannot look up the principal {principal_id!r}: the site'
                ' ZCML registers no IAuthentication utility (include'
                ' zope.principalregistry)')
        try:
            return auth.getPrincipal(principal_id)
        except zope.authentication.interfaces.PrincipalLookupError:
            raise ConfigurationError(
                f'Unknown principal {principal_id!r}') from None

    def tick(self, principal=None):
        """Run the worker in a transaction; return how long to sleep."""
        self.failed = False
        transaction.begin()
        if principal is not None:
            zope.security.management.newInteraction(Participation(principal))
        try:
            try:
                result = self.worker()
            except (SystemExit, KeyboardInterrupt) as e:
                transaction.abort()
                self.exit_code = getattr(e, 'code', None)
                self.stop()
                return 0
            except Exception:
                transaction.abort()
                self.failed = True
                log.exception('Error in worker %s, transaction aborted',
                              _name(self.worker))
                return self.ticks
            self.commit()
        finally:
            if principal is not None:
                zope.security.management.endInteraction()
        if result is Exit:
            self.stop()
            return 0
        if isinstance(result, numbers.Real) and not isinstance(result, bool):
            return max(result, 0)
        return self.ticks

    def commit(self):
        """Commit the tick's transaction; abort it if that fails."""
        try:
            transaction.commit()
        except ConflictError as e:
            transaction.abort()
            self.failed = True
            log.warning('Conflict in worker %s, transaction aborted: %s',
                        _name(self.worker), e)
        except Exception:
            transaction.abort()
            self.failed = True
            log.exception('Error committing the transaction of worker %s',
                          _name(self.worker))

    def sleep(self, seconds):
        """Sleep `seconds`, waking at once when the loop is stopped."""
        deadline = time.monotonic() + seconds
        while self.running:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            select.select([self._wakeup], [], [], remaining)
            self._drain()

    def stop(self, signum=None, frame=None):
        """Leave the loop after the running tick (a signal handler, too)."""
        self.running = False
        if signum is not None:
            self._signal = signum
        if self._wake is not None:
            try:
                os.write(self._wake, b'.')
            except BlockingIOError:
                pass  # the pipe is full: woken up already

    def _install_signal_handlers(self):
        # Python allows signal handlers in the main thread only; a loop run
        # in another thread is stopped by its owner through stop().
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {signum: signal.signal(signum, self.stop)
                for signum in STOP_SIGNALS}

    def _drain(self):
        try:
            while os.read(self._wakeup, 512):
                pass
        except BlockingIOError:
            pass

    def _log_signal(self):
        # Logged here, not in the handler: a handler may interrupt a write to
        # the very stream the log goes to.
        if self._signal is not None:
            log.info('Received signal %s, terminating.', self._signal)
            self._signal = None


def _name(worker):
    return getattr(worker, '__qualname__', repr(worker))
