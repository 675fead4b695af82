"""Not running twice: a lock file held for the whole run."""

import contextlib
import os

import zc.lockfile

from gocept.runner.config import ConfigurationError


class AlreadyRunning(Exception):
    """Another process holds the lock file of the run."""


@contextlib.contextmanager
def locked(path):
    """Hold the zc.lockfile lock `path` while the block runs.

    Raises AlreadyRunning naming the lock file and the pid of its holder.
    Only the process that took the lock releases it.
    """
    try:
        lock = zc.lockfile.LockFile(path)
    except zc.lockfile.LockError:
        raise AlreadyRunning(
            f'Another run holds the lock file {path}'
            f' (pid {_holder(path)})') from None
    except OSError as e:
        raise ConfigurationError(
            f'Cannot open the lock file {path}: {e.strerror}') from None
    pid = os.getpid()
    try:
        yield
    finally:
        # A child forked meanwhile shares the lock (flock is held by the
        # open file, not the process): its unlocking would be the parent's.
        if os.getpid() == pid:
            lock.close()


def _holder(path):
    # zc.lockfile writes " <pid>\n" right after taking the lock; the file is
    # empty in the moment between the two.
    try:
        with open(path) as f:
            return f.read().strip() or 'unknown'
    except OSError:
        return 'unknown'
