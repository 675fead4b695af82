"""Not running twice: a lock file held for the whole run."""

import contextlib
import os
import re
import stat

import zc.lockfile

from gocept.runner.interfaces import AlreadyRunning
from gocept.runner.interfaces import ConfigurationError
from gocept.runner.interfaces import NotALockFile


# What zc.lockfile writes: " <pid>\n", maybe with more on the line (a host
# name), maybe followed by the rest of a longer earlier line if its writer
# was killed before it truncated the file.
_LOCK_FILE_CONTENT = re.compile(rb'( [\x20-\x7e]*\n([\x20-\x7e]*\n)?)?')

# Anything longer is not a lock file.
_MAX_SIZE = 256


class LockFile(zc.lockfile.LockFile):
    """A zc.lockfile lock that refuses to overwrite anything but an empty
    file or a lock file.

    Raises NotALockFile (and leaves the file as it was) if `path` names
    anything else, such as a database.
    """

    def _on_lock(self):
        # Checked with the lock held, so no other runner writes between the
        # check and our write.
        fd = self._fp.fileno()
        content = os.pread(fd, _MAX_SIZE + 1, 0)
        if not (stat.S_ISREG(os.fstat(fd).st_mode) and
                len(content) <= _MAX_SIZE and
                _LOCK_FILE_CONTENT.fullmatch(content)):
            self.close()
            raise NotALockFile(
                f'The lock file {self._path} is not a lock file, it would be'
                ' overwritten: name a new file, an empty one or a lock file')
        try:
            super()._on_lock()
        except OSError:
            # The disk is full: give up the lock that has no pid in it.
            with contextlib.suppress(OSError):
                self.close()
            raise


@contextlib.contextmanager
def locked(path):
    """Hold the lock file `path` while the block runs.

    Raises AlreadyRunning naming the lock file and the pid of its holder if
    another process holds it, ConfigurationError if this process does or if
    `path` is no lock file (see LockFile).  The lock is released only by the
    process that took it, not by a forked child leaving the block.
    """
    try:
        lock = LockFile(path)
    except zc.lockfile.LockError:
        holder = holder_of(path)
        if holder == str(os.getpid()):
            raise ConfigurationError(
                f'This process holds the lock file {path} already') from None
        raise AlreadyRunning(
            f'Another run holds the lock file {path}'
            f' (pid {holder})') from None
    except OSError as e:
        raise ConfigurationError(
            f'Cannot open the lock file {path}: {e.strerror}') from e
    pid = os.getpid()
    try:
        yield
    finally:
        # A forked child shares the lock with its parent: releasing it would
        # release it for the parent, too.
        if os.getpid() == pid:
            lock.close()


def holder_of(path):
    """The pid written in the zc.lockfile lock file `path`, or 'unknown'."""
    # zc.lockfile writes " <pid>\n" right after taking the lock; the file is
    # empty in the moment between the two.  ZODB writes " <pid>;<host>\n".
    try:
        with open(path, 'rb') as f:
            content = f.read(_MAX_SIZE)
    except OSError:
        return 'unknown'
    pid = re.match(rb' *(\d+)', content)
    return pid.group(1).decode() if pid else 'unknown'
