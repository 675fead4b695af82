"""The main loop: one transaction per tick, until told to stop."""

import fcntl
import logging
import numbers
import os
import resource
import select
import signal
import sys
import threading
import time

import transaction
import ZConfig.components.logger.loghandler
import zope.authentication.interfaces
import zope.component
import zope.component.hooks
import zope.component.interfaces
import zope.interface
import zope.security.interfaces
import zope.security.management
from ZODB.POSException import ConflictError

from gocept.runner import retry
from gocept.runner import systemd
from gocept.runner.config import ConfigurationError


log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
# Asks to reopen the log files, as after logrotate moved them (the signal
# zdaemon's "logreopen" sends).
REOPEN_SIGNAL = signal.SIGUSR2

# The values of MainLoop.stopped_because.
STOP_REASONS = (
    'Exit',  # the worker returned gocept.runner.Exit
    'once',  # the loop ran its one tick
    'signal',  # SIGTERM, SIGHUP or SIGINT
    'SystemExit',  # raised by the worker (MainLoop.exit_code has its code)
    'KeyboardInterrupt',  # raised by the worker
    'stop',  # MainLoop.stop() was called
    'max_ticks', 'max_runtime', 'max_memory',  # a limit was reached
)
# The reasons after which a fresh process should take over.
LIMITS = ('max_ticks', 'max_runtime', 'max_memory')

# First and longest pause (seconds) between ticks while the storage is
# unavailable; the pause doubles from one to the other.
OUTAGE_PAUSE = (0.1, 30)


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
    returned.  A tick whose commit conflicts is retried at once a few times
    (see gocept.runner.retry).  The loop ends when the worker returns Exit
    or raises SystemExit or KeyboardInterrupt, on SIGTERM or SIGHUP (after
    the running tick has committed), on SIGINT (which aborts a running
    worker), after one tick if `once` is true, or after the tick that
    reached `max_ticks` ticks, `max_runtime` seconds or `max_memory` bytes
    of resident memory; `stopped_because` then says why.  With a
    `principal` (an id, or a callable returning one) every tick runs in a
    security interaction of that principal.  The mtime of the file
    `heartbeat` is updated after every tick, and systemd is notified when
    NOTIFY_SOCKET is set.
    """

    def __init__(self, app, ticks, worker, principal=None, once=False,
                 max_ticks=None, max_runtime=None, max_memory=None,
                 heartbeat=None):
        self.app = app
        self.ticks = ticks
        self.worker = worker
        self.principal = principal
        self.once = once
        self.max_ticks = max_ticks
        self.max_runtime = max_runtime
        self.max_memory = max_memory
        self.heartbeat = heartbeat
        self.running = False
        # Whether the last tick failed (worker error, failed commit).
        self.failed = False
        # The code of a SystemExit the worker raised, if it raised one.
        self.exit_code = None
        # Why the loop ended: one of STOP_REASONS.
        self.stopped_because = None
        self.tick_count = 0
        self._started = None
        self._signal = None
        self._reopen = False
        self._wakeup = self._wake = None
        self._notify = systemd.Notifier()
        # Whether the next tick needs a new transaction to see fresh data.
        self._stale = True
        self._in_worker = False
        self._worker_returned = False
        # The pause before the next tick while the storage is unavailable.
        self._outage_pause = None

    def run(self):
        """Run ticks until the loop is told to stop."""
        principal = self.lookup_principal()
        self._touch_heartbeat()
        old_site = zope.component.hooks.getSite()
        self.running = True
        self.stopped_because = None
        self.tick_count = 0
        self._stale = True
        self._started = time.monotonic()
        self._wakeup, self._wake = os.pipe()
        for fd in self._wakeup, self._wake:
            fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK)
        handlers = self._install_signal_handlers()
        try:
            if zope.component.interfaces.ISite.providedBy(self.app):
                zope.component.hooks.setSite(self.app)
            self._notify('READY=1')
            while True:
                delay = self.tick(principal)
                self._log_signal()
                self._reopen_logs()
                if self.once:
                    self.stop('once')
                self._check_limits()
                if not self.running:
                    break
                self.sleep(self._until_deadline(delay))
                self._log_signal()
                self._check_limits()
                if not self.running:
                    break
        finally:
            self.running = False
            self._notify('STOPPING=1')
            self._notify.close()
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
        self.tick_count += 1
        started = time.monotonic()
        if principal is not None:
            zope.security.management.newInteraction(Participation(principal))
        try:
            outcome, delay = self._run_worker()
        finally:
            if principal is not None:
                zope.security.management.endInteraction()
        log.debug('Tick %s of worker %s: %s in %.3f s', self.tick_count,
                  _name(self.worker), outcome, time.monotonic() - started)
        self._touch_heartbeat()
        self._notify('WATCHDOG=1')
        return delay

    def _run_worker(self):
        # Returns the tick's outcome (for the log) and the delay to sleep.
        if self._stale:
            # A new transaction has the connection catch up with what others
            # committed since.  Right after the last tick that is done: the
            # end of its transaction did it.
            transaction.begin()
        self._stale = False
        try:
            result, retried = retry.run(self._call_worker)
        except (SystemExit, KeyboardInterrupt) as e:
            self.exit_code = getattr(e, 'code', None)
            self.stop(type(e).__name__)
            return 'aborted by ' + type(e).__name__, 0
        except _storage_unavailable_errors() as e:
            self.failed = True
            return 'storage unavailable', self._storage_unavailable(e)
        except ConflictError as e:
            self.failed = True
            log.warning('Conflict in worker %s, transaction aborted after %s'
                        ' attempts: %s', _name(self.worker), retry.ATTEMPTS,
                        e)
            return 'conflict', self.ticks
        except Exception:
            self.failed = True
            if self._worker_returned:
                log.exception('Error committing the transaction of worker %s',
                              _name(self.worker))
            else:
                log.exception('Error in worker %s, transaction aborted',
                              _name(self.worker))
            return 'error', self.ticks
        self._storage_available()
        outcome = 'committed'
        if retried:
            outcome += f' after {retried} conflicts'
        if result is Exit:
            self.stop('Exit')
            return outcome, 0
        if isinstance(result, numbers.Real) and not isinstance(result, bool):
            return outcome, max(result, 0)
        return outcome, self.ticks

    def _call_worker(self):
        self._worker_returned = False
        self._in_worker = True
        try:
            result = self.worker()
        finally:
            self._in_worker = False
        self._worker_returned = True
        return result

    def _storage_unavailable(self, error):
        if self._outage_pause is None:
            log.warning('Storage unavailable (%s), transaction of worker %s'
                        ' aborted; trying again until it is back',
                        _describe(error), _name(self.worker))
            self._outage_pause = OUTAGE_PAUSE[0]
        else:
            self._outage_pause = min(2 * self._outage_pause, OUTAGE_PAUSE[1])
        return self._outage_pause

    def _storage_available(self):
        if self._outage_pause is not None:
            log.info('Storage available again, worker %s goes on',
                     _name(self.worker))
            self._outage_pause = None

    def sleep(self, seconds):
        """Sleep `seconds`, waking at once when the loop is stopped."""
        deadline = time.monotonic() + seconds
        self._stale = self._stale or seconds > 0
        while self.running:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            select.select([self._wakeup], [], [], remaining)
            self._drain()
            self._reopen_logs()

    def stop(self, reason='stop'):
        """Leave the loop after the running tick.

        `reason` becomes `stopped_because` unless the loop is stopping for
        another reason already.
        """
        self.running = False
        if self.stopped_because is None:
            self.stopped_because = reason
        self._wake_up()

    def _wake_up(self):
        if self._wake is not None:
            try:
                os.write(self._wake, b'.')
            except BlockingIOError:
                pass  # the pipe is full: woken up already

    def _on_signal(self, signum, frame):
        self._signal = signum
        self.stop('signal')
        if signum == signal.SIGINT and self._in_worker:
            # Like the default handler, but only while the worker runs: a
            # commit is never cut short.
            raise KeyboardInterrupt

    def _on_reopen_signal(self, signum, frame):
        self._reopen = True
        self._wake_up()

    def _install_signal_handlers(self):
        # Python allows signal handlers in the main thread only; a loop run
        # in another thread is stopped by its owner through stop().
        if threading.current_thread() is not threading.main_thread():
            return {}
        handlers = {signum: signal.signal(signum, self._on_signal)
                    for signum in STOP_SIGNALS}
        handlers[REOPEN_SIGNAL] = signal.signal(
            REOPEN_SIGNAL, self._on_reopen_signal)
        return handlers

    def _reopen_logs(self):
        # Here, between ticks, not in the handler: see _log_signal.
        if self._reopen:
            self._reopen = False
            ZConfig.components.logger.loghandler.reopenFiles()
            log.debug('Log files reopened')

    def _check_limits(self):
        if not self.running:
            return
        if self.max_ticks is not None and self.tick_count >= self.max_ticks:
            reason, value = 'max_ticks', self.tick_count
        elif (self.max_runtime is not None and
              time.monotonic() - self._started >= self.max_runtime):
            reason, value = 'max_runtime', self.max_runtime
        elif (self.max_memory is not None and
              resident_memory() >= self.max_memory):
            reason, value = 'max_memory', resident_memory()
        else:
            return
        log.info('Worker %s reached %s (%s), stopping.', _name(self.worker),
                 reason, value)
        self.stop(reason)

    def _until_deadline(self, delay):
        if self.max_runtime is None:
            return delay
        return min(delay, self._started + self.max_runtime - time.monotonic())

    def _touch_heartbeat(self):
        if self.heartbeat is None:
            return
        try:
            with open(self.heartbeat, 'a'):
                pass
            os.utime(self.heartbeat)
        except OSError as e:
            raise ConfigurationError(
                f'Cannot write the heartbeat file {self.heartbeat}:'
                f' {e.strerror}') from None

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


def resident_memory():
    """The resident set size of this process in bytes."""
    try:
        with open('/proc/self/statm') as f:
            pages = int(f.read().split()[1])
    except OSError:
        # No procfs (macOS, BSD): the peak is the best there is.  ru_maxrss
        # is in KiB on Linux and the BSDs, in bytes on macOS.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == 'darwin' else peak * 1024
    return pages * os.sysconf('SC_PAGE_SIZE')


def _storage_unavailable_errors():
    # A disconnected ZEO client; ZEO (an optional extra) is imported by the
    # time a storage of it fails, and importing it here would slow down the
    # start-up of every runner.
    zeo = sys.modules.get('ZEO.Exceptions')
    return (zeo.ClientDisconnected,) if zeo is not None else ()


def _describe(error):
    text = str(error)
    return f'{type(error).__name__}: {text}' if text else type(error).__name__


def _name(worker):
    return getattr(worker, '__qualname__', repr(worker))
