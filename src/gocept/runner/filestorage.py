"""FileStorages that come through a full disk, and damaged ones left alone.

ZODB's FileStorage keeps what it could not write on a full disk in its file
buffers and at the end of its file, where the next write or close trips over
it again; and it cuts a damaged file at the damage when it opens it, moving
everything after that into a ``.trN`` file.  A program that runs for months
unattended wants neither: `guard` makes an open FileStorage go back to its
last committed transaction on every abort and close cleanly on a full disk;
`check` refuses a file that opening would cut by more than the one
unfinished transaction a killed writer leaves.
"""

import contextlib
import errno
import logging
import os
import struct

import zc.lockfile
import ZODB.config
import ZODB.FileStorage
from ZODB.FileStorage.FileStorage import CorruptedFileStorageError
from ZODB.FileStorage.FileStorage import TempFormatter
from ZODB.FileStorage.format import TRANS_HDR
from ZODB.FileStorage.format import TRANS_HDR_LEN

from gocept.runner.interfaces import DamagedFile


log = logging.getLogger(__name__)

# The errors of a full disk or of an exhausted quota.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(error):
    """Whether `error` says that the disk (or the user's quota) is full."""
    return isinstance(error, OSError) and error.errno in DISK_FULL


class FileStorage(ZODB.FileStorage.FileStorage):
    """A FileStorage that recovers from writes that failed (a full disk).

    Aborting a transaction drops whatever the storage's file buffers still
    hold and cuts the file back to the end of the last committed
    transaction; closing does the same.  An index that cannot be saved on a
    full disk is logged, not raised: it is rebuilt from the file when the
    file is opened next.
    """

    def _abort(self):
        if self._restart_files():
            # Readers may have read the bytes cut off into their buffers.
            self._files.flush()
        super()._abort()

    def close(self):
        if not self._file.closed:
            self._restart_files()
        super().close()

    def _save_index(self):
        try:
            super()._save_index()
        except OSError as e:
            if not disk_full(e):
                raise
            with contextlib.suppress(OSError):
                os.remove(f'{self.__name__}.index.index_tmp')
            log.info('Could not save the index of %s (%s); it is rebuilt'
                     ' from the file when it is opened next',
                     self._file_name, e.strerror)

    def _restart_files(self):
        """Start the data and temporary files afresh, the data file cut
        back to the last committed transaction; return whether there was
        something to cut."""
        # Both are buffered: after a failed write their buffers still hold
        # what did not fit, and every later seek, flush or close tries to
        # write it again (at the old place, once there is space).  New file
        # objects start with empty buffers.
        self._file = _reopen(self._file, self._file_name)
        if self._tfile is not None:
            self._tfile = _reopen(self._tfile, f'{self._file_name}.tmp')
            self._tfmt = TempFormatter(self._tfile)
        if os.fstat(self._file.fileno()).st_size <= self._pos:
            return False
        log.debug('Cutting %s back to its last committed transaction at %s',
                  self._file_name, self._pos)
        self._file.truncate(self._pos)
        return True


def _reopen(file, path):
    """Open `path` anew for writing; close `file` without writing what its
    buffer holds."""
    new = open(path, 'r+b')
    # Closing the raw file beneath a buffered one skips the buffer; the
    # buffered file then counts as closed, also to its finalizer.
    file.raw.close()
    return new


def guard(storage):
    """Make `storage` one of this module's FileStorages if it is a writable
    one of ZODB's; return it."""
    # ZODB's <filestorage> section makes a ZODB FileStorage, and the
    # database around it is built by the time we see it.
    if (type(storage) is ZODB.FileStorage.FileStorage and
            not storage.isReadOnly()):
        storage.__class__ = FileStorage
    return storage


def check_section(factory):
    """`check` the FileStorage of the ``<zodb>`` section `factory` (an
    opener of ZODB.config), if it has one that opening may cut."""
    storage = getattr(factory.config, 'storage', None)
    if not isinstance(storage, ZODB.config.FileStorage):
        return
    section = storage.config
    if section.read_only or section.create:
        return
    check(section.path)


def check(path):
    """Raise DamagedFile if opening the FileStorage `path` would cut it.

    Opening a FileStorage cuts its file where a transaction is incomplete or
    damaged.  A writer killed in the middle of a commit leaves one
    unfinished transaction at the end of the file: cutting that is the
    normal recovery, and `check` lets it happen; so it does for nothing but
    zero bytes at the end, which a crash of the machine may leave.
    Anything more is damage a person must look at.  `check` only reads the
    file, under the storage's lock, as far as opening would (from where its
    index ends).  A file that cannot be opened at all, or is locked by
    another process, is left to opening to report.
    """
    if not os.path.isfile(path):
        return
    try:
        lock = zc.lockfile.LockFile(f'{path}.lock')
    except (zc.lockfile.LockError, OSError):
        return
    try:
        try:
            end = _end_of_transactions(path)
        except CorruptedFileStorageError as e:
            raise DamagedFile(f'{e}: the file is damaged; it is unchanged.'
                              f' {_repair(path)}') from None
        except Exception:
            return
        size = os.path.getsize(path)
        if end < size and not (_unfinished_transaction(path, end, size) or
                               _only_zeros(path, end)):
            raise DamagedFile(
                f'{path} is damaged at byte {end}: opening it would move the'
                f' {size - end} bytes from there on into {_tr_file(path)},'
                ' more than the one unfinished transaction a killed writer'
                f' leaves; the file is unchanged. {_repair(path)}')
    finally:
        lock.close()


def _end_of_transactions(path):
    """Where opening `path` would find its last good transaction to end."""
    zodb_log = logging.getLogger('ZODB.FileStorage')
    # What ZODB says about the file now, it says again when it opens it.
    zodb_log.addFilter(_nothing)
    try:
        storage = ZODB.FileStorage.FileStorage(path, read_only=True)
    finally:
        zodb_log.removeFilter(_nothing)
    try:
        return storage.getSize()
    finally:
        storage.close()


def _nothing(record):
    return False


def _unfinished_transaction(path, pos, size):
    """Whether the bytes of `path` from `pos` to `size` are (the beginning
    of) one transaction whose commit did not finish."""
    with open(path, 'rb') as f:
        f.seek(pos)
        header = f.read(TRANS_HDR_LEN)
    if len(header) < TRANS_HDR_LEN:
        return True
    tid, length, status, user, description, extension = struct.unpack(
        TRANS_HDR, header)
    # Written with the checkpoint status, which the end of the commit
    # clears; its record is the transaction's length and eight bytes more.
    return status == b'c' and size - pos <= length + 8


def _only_zeros(path, pos):
    """Whether `path` holds nothing but zero bytes from `pos` on.

    A crash of the machine (not of the process) may leave them where the
    last writes were to go; cutting them off loses nothing.
    """
    with open(path, 'rb') as f:
        f.seek(pos)
        while chunk := f.read(1 << 16):
            if chunk.count(0) != len(chunk):
                return False
    return True


def _tr_file(path):
    """The ``.trN`` file ZODB would move the cut-off bytes of `path` into."""
    number = 0
    while os.path.exists(f'{path}.tr{number}'):
        number += 1
    return f'{path}.tr{number}'


def _repair(path):
    return (f'Repair it with python -m ZODB.fsrecover {path}'
            f' {path}.recovered, check the result with python -m'
            ' ZODB.scripts.fstest and put it in place of the damaged file')
