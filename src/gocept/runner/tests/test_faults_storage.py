"""Storage faults while running: a full disk, a damaged Data.fs."""

import errno
import logging
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import unittest

import ZODB
import ZODB.FileStorage
import ZODB.scripts.fstest
from ZODB.FileStorage.format import TRANS_HDR
from ZODB.FileStorage.format import TRANS_HDR_LEN

from gocept.runner import outage
from gocept.runner import testing
from gocept.runner.tests import programs


FILESTORAGE = '<filestorage>\n    path {path}\n  </filestorage>'


def wait_until(condition, what, timeout=30):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f'No {what} after {timeout} s')
        time.sleep(0.02)


def committed(directory):
    """The numbers the program in `directory` reported committed."""
    return [int(line.split()[1]) for line in programs.read_report(directory)
            if line.startswith('committed ')]


def stored_count(path):
    """The count in the FileStorage `path`, opened as a runner would."""
    db = ZODB.DB(path)
    try:
        with db.transaction() as connection:
            return connection.root()['count']
    finally:
        db.close()


class DiskFullTests(unittest.TestCase):
    """A full disk is an outage: the runner waits for space and goes on.

    Data.fs is on a tmpfs of its own, which only root can mount.
    """

    layer = testing.SubprocessLayer

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest('mounting a tmpfs to fill needs root')
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.disk = os.path.join(self.dir, 'disk')
        os.mkdir(self.disk)
        result = subprocess.run(
            ['mount', '-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', self.disk],
            capture_output=True, text=True)
        if result.returncode != 0:
            self.skipTest(f'cannot mount a tmpfs: {result.stderr.strip()}')
        self.addCleanup(subprocess.run, ['umount', '-l', self.disk])
        self.data_fs = os.path.join(self.disk, 'Data.fs')
        programs.write_zope_conf(
            self.dir, FILESTORAGE.format(path=self.data_fs))

    def fill(self):
        """Fill the disk with the file `filler`."""
        fd = os.open(os.path.join(self.disk, 'filler'),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:
                os.write(fd, b'x' * 4096)
        except OSError as e:
            self.assertEqual(errno.ENOSPC, e.errno)
        finally:
            os.close(fd)

    def free(self):
        os.remove(os.path.join(self.disk, 'filler'))

    def output(self):
        with open(os.path.join(self.dir, 'output')) as f:
            return f.read()

    def lines(self, level):
        return [line for line in self.output().splitlines()
                if line.startswith(f'{level} ')]

    def wait_for_commits(self, number):
        reached = len(committed(self.dir)) + number
        wait_until(lambda: len(committed(self.dir)) >= reached,
                   f'{number} more commits')

    def wait_for_warnings(self, number):
        wait_until(lambda: len(self.lines('WARNING')) >= number,
                   f'{number} WARNING lines')

    def run_until_the_disk_is_full_twice(self, program):
        # Slow enough that the program does not fill the disk itself.
        process = programs.start_command(
            self.dir, program, '--ticks', '0.02')
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        self.wait_for_commits(3)
        self.fill()
        self.wait_for_warnings(1)
        # Ticks go on failing while the disk stays full.
        ticks = len(programs.read_report(self.dir))
        wait_until(lambda: len(programs.read_report(self.dir)) > ticks + 3,
                   'ticks while the disk is full')
        self.assertIsNone(process.poll())
        self.assertEqual(
            ['WARNING gocept.runner.outage Storage unavailable (OSError:'
             ' [Errno 28] No space left on device), transaction of worker'
             f' {program} aborted; trying again until it is back'],
            self.lines('WARNING'))
        self.free()
        self.wait_for_commits(3)
        self.assertIn('INFO gocept.runner.outage Storage available again,'
                      f' worker {program} goes on', self.output())
        self.fill()
        self.wait_for_warnings(2)
        process.send_signal(signal.SIGTERM)
        self.assertEqual(0, process.wait(30), self.output())
        output = self.output()
        self.assertEqual(2, len(self.lines('WARNING')), output)
        for text in 'ERROR', 'CRITICAL', 'Traceback':
            self.assertNotIn(text, output)
        # What the disk holds is a sound FileStorage as it is, full.
        ZODB.scripts.fstest.check(self.data_fs)
        self.free()
        # It opens without losing a byte (the index, which could not be
        # saved, is rebuilt) and holds every reported commit, each once.
        numbers = committed(self.dir)
        with self.assertLogs('ZODB', logging.WARNING) as logs:
            self.assertEqual(numbers[-1], stored_count(self.data_fs))
            logging.getLogger('ZODB').warning('opened')
        self.assertEqual(
            [f'Ignoring index for {self.data_fs}', 'opened'],
            [record.getMessage() for record in logs.records])
        self.assertEqual(list(range(1, numbers[-1] + 1)), numbers)

    def test_commits_that_fit_in_the_file_buffers(self):
        self.run_until_the_disk_is_full_twice('small')

    def test_commits_larger_than_the_file_buffers(self):
        self.run_until_the_disk_is_full_twice('count')


class UnavailableTests(unittest.TestCase):
    """Which errors of the disk the loop waits out."""

    def error(self, number):
        return OSError(number, os.strerror(number))

    def test_a_full_disk_or_quota_goes_away(self):
        self.assertTrue(outage.unavailable(self.error(errno.ENOSPC)))
        self.assertTrue(outage.unavailable(self.error(errno.EDQUOT)))

    def test_a_failing_or_read_only_disk_does_not(self):
        self.assertFalse(outage.unavailable(self.error(errno.EIO)))
        self.assertFalse(outage.unavailable(self.error(errno.EROFS)))
        self.assertFalse(outage.unavailable(self.error(errno.EACCES)))


class DamagedFileTests(unittest.TestCase):
    """A Data.fs that opening would cut is refused and left as it is."""

    layer = testing.SubprocessLayer

    TRANSACTIONS = 60

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.data_fs = os.path.join(self.dir, 'Data.fs')
        programs.write_zope_conf(self.dir)
        # The database's first transaction makes its root object.
        db = ZODB.DB(self.data_fs)
        for number in range(1, self.TRANSACTIONS):
            with db.transaction() as connection:
                connection.root()['count'] = number
                connection.root()['ballast'] = os.urandom(500)
        db.close()
        # Without an index that ends after the damage (the writer was
        # killed, or only Data.fs was copied), opening reads the whole file.
        os.remove(f'{self.data_fs}.index')

    def transactions(self):
        """Position and header of each transaction in Data.fs."""
        with open(self.data_fs, 'rb') as f:
            size = os.fstat(f.fileno()).st_size
            pos = 4
            while pos < size:
                f.seek(pos)
                header = struct.unpack(TRANS_HDR, f.read(TRANS_HDR_LEN))
                yield pos, header
                pos += header[1] + 8

    def write_length(self, pos, length):
        with open(self.data_fs, 'r+b') as f:
            f.seek(pos + 8)
            f.write(struct.pack('>Q', length))

    def data_fs_bytes(self):
        with open(self.data_fs, 'rb') as f:
            return f.read()

    def run_once(self, program='count'):
        process = programs.start_command(self.dir, program, '--once')
        process.wait(60)
        with open(os.path.join(self.dir, 'output')) as f:
            return process.returncode, f.read()

    def assertRefused(self, *fragments):
        damaged = self.data_fs_bytes()
        status, output = self.run_once()
        self.assertEqual(2, status, output)
        lines = output.splitlines()
        self.assertEqual(1, len(lines), output)
        self.assertTrue(lines[0].startswith(
            "python -m gocept.runner: Cannot open the database: "), output)
        for fragment in (self.data_fs, 'fsrecover', *fragments):
            self.assertIn(fragment, lines[0])
        self.assertEqual(damaged, self.data_fs_bytes())
        self.assertFalse(os.path.exists(f'{self.data_fs}.tr0'))
        self.assertEqual([], programs.read_report(self.dir))
        return lines[0]

    def test_a_transaction_length_beyond_the_end_in_the_middle(self):
        self.assertEqual(self.TRANSACTIONS, len(list(self.transactions())))
        pos, header = list(self.transactions())[self.TRANSACTIONS // 2]
        size = len(self.data_fs_bytes())
        self.write_length(pos, 2 ** 40)
        line = self.assertRefused(
            f'damaged at byte {pos}:',
            f'move the {size - pos} bytes from there on into'
            f' {self.data_fs}.tr0')
        self.assertTrue(line.endswith(
            f'Repair it with python -m ZODB.fsrecover {self.data_fs}'
            f' {self.data_fs}.recovered, check the result with python -m'
            ' ZODB.scripts.fstest and put it in place of the damaged file'),
            line)

    def test_a_transaction_length_that_does_not_add_up(self):
        pos, header = list(self.transactions())[self.TRANSACTIONS // 2]
        self.write_length(pos, header[1] + 100)
        self.assertRefused('the file is damaged; it is unchanged.')

    def test_a_damaged_last_transaction(self):
        # A transaction that was committed is not the unfinished one of a
        # killed writer, even at the end of the file.
        pos, header = list(self.transactions())[-1]
        self.write_length(pos, 2 ** 40)
        self.assertRefused(f'damaged at byte {pos}:')

    def test_the_unfinished_transaction_of_a_killed_writer_is_cut(self):
        status, output = self.run_once('killed_in_commit')
        self.assertEqual(-signal.SIGKILL, status, output)
        last, header = list(self.transactions())[-1]
        self.assertEqual(b'c', header[2])
        self.check_cut_silently(last)

    def test_a_killed_writer_s_transaction_cut_short(self):
        self.run_once('killed_in_commit')
        last, header = list(self.transactions())[-1]
        with open(self.data_fs, 'r+b') as f:
            f.truncate(last + header[1] // 2)
        self.check_cut_silently(last)

    def test_a_killed_writer_s_transaction_header_cut_short(self):
        self.run_once('killed_in_commit')
        last, header = list(self.transactions())[-1]
        with open(self.data_fs, 'r+b') as f:
            f.truncate(last + TRANS_HDR_LEN - 5)
        self.check_cut_silently(last)

    def test_zero_bytes_at_the_end(self):
        # What a crash of the machine may leave; they hold nothing to lose.
        end = len(self.data_fs_bytes())
        with open(self.data_fs, 'ab') as f:
            f.write(bytes(5000))
        status, output = self.run_once()
        self.assertEqual(0, status, output)
        self.assertNotIn('gocept.runner:', output)
        self.assertEqual([self.TRANSACTIONS], committed(self.dir))
        ZODB.scripts.fstest.check(self.data_fs)
        self.assertIn(end, [pos for pos, _ in self.transactions()])

    def test_zero_bytes_after_a_damaged_transaction(self):
        pos, header = list(self.transactions())[-1]
        with open(self.data_fs, 'r+b') as f:
            f.seek(pos + TRANS_HDR_LEN)
            f.write(bytes(header[1] + 8 - TRANS_HDR_LEN))
            f.write(bytes(5000))
        self.write_length(pos, 2 ** 40)
        self.assertRefused(f'damaged at byte {pos}:')

    def check_cut_silently(self, unfinished):
        # The killed commit is lost; the next run commits its count instead.
        count = self.TRANSACTIONS - 1
        self.assertEqual([f'committing {count + 1}'],
                         programs.read_report(self.dir))
        os.remove(os.path.join(self.dir, 'output'))
        status, output = self.run_once()
        self.assertEqual(0, status, output)
        self.assertNotIn('gocept.runner:', output)
        self.assertNotIn('ERROR', output)
        self.assertEqual([count + 1], committed(self.dir))
        ZODB.scripts.fstest.check(self.data_fs)
        self.assertIn(unfinished, [pos for pos, _ in self.transactions()])
        self.assertEqual(count + 1, stored_count(self.data_fs))
