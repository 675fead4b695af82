"""Committing after every item of a batch."""

import functools
import logging
import shutil
import sys
import threading
import time

import transaction
from ZODB.POSException import ConflictError

from gocept.runner import outage
from gocept.runner import retry


log = logging.getLogger(__name__)

# Seconds between two progress lines of a long run (when stderr is not a
# terminal).
PROGRESS_INTERVAL = 60
# A run shorter than this (seconds) has nothing to report beyond the line of
# each failed item: its summary is at DEBUG.  Longer runs log it at INFO.
SUMMARY_SECONDS = 1
# When stderr is a terminal: seconds before the progress line appears, and
# between two updates of it.
TERMINAL_DELAY = 1
TERMINAL_UPDATE = 0.2


def transaction_per_item(generator_function):
    """Decorate a generator function that yields the items of a batch.

    An item is a callable, or a pair ``(description, callable)`` whose
    description (anything, shown with str()) names the item in every line
    logged about it; a bare callable is named by its qualified name (see
    `name_of`).  Each callable is called in a transaction of its own
    and committed after it; what was changed before it (by the generator,
    or by the caller before the first item) is committed on its own first,
    and so is what the generator changed after the last item.  An item
    whose commit conflicts is retried a few times (see
    gocept.runner.retry); an item that fails for good is aborted and
    logged, and the next one runs.  When the commit of the changes before an
    item fails, they are aborted and the item is skipped, as a failed item.
    When the storage becomes unavailable, the run ends.  Once an item has
    committed, neither a ConflictError nor the unavailable storage leaves
    the decorated function, only a WARNING: a caller's retry would run the
    committed items again.

    Arguments are passed through to the generator function.  At the end of
    a run a summary is logged (INFO for a run of SUMMARY_SECONDS or longer,
    DEBUG for a shorter one); a long run shows its progress (see
    `Statistics`).  What the runs did is counted in every `collect()`
    block around them.
    """
    @functools.wraps(generator_function)
    def run(*args, **kw):
        stats = Statistics(generator_function.__qualname__)
        try:
            _run(generator_function(*args, **kw), stats)
        finally:
            stats.end()
    return run


def _run(items, stats):
    number = 0
    while True:
        try:
            item = next(items)
        except StopIteration:
            break
        except Exception as e:
            # A conflict while the generator reads, say.
            if not (stats.committed and
                    transaction.get().isRetryableError(e)):
                raise
            _end(stats, e, f'{stats.name} after {number} items')
            return
        number += 1
        description, func = _split(item)
        try:
            # A retry must not repeat or lose work that is not the item's.
            if _commit(stats, 'before', description):
                _run_item(func, description, stats)
        except Exception as e:  # the storage is unavailable
            if not stats.committed:
                raise
            _end(stats, e, description)
            return
        stats.progress()
    _commit(stats, 'after', f'the last item of {stats.name}')


def _end(stats, error, where):
    """End the run after `error` at `where`, without raising it: the caller
    would retry and run committed items again."""
    transaction.abort()
    stats.failed += 1
    if isinstance(error, ConflictError):
        stats.conflicts += 1
        stats.conflicted += 1
        stats.warning('Conflict in %s, transaction aborted; the run ends'
                      ' here: %s', where, error)
    else:
        stats.warning('Storage unavailable (%s) in %s, transaction aborted;'
                      ' the run ends here', type(error).__name__, where)


def _split(item):
    """The description and the callable of `item`.

    The description is made a string (with str()) only when a line about
    the item is logged: a repr for every item would cost more than a
    commit of a small one.
    """
    if isinstance(item, tuple) and len(item) == 2:
        return item
    return _Name(item), item


class _Name:
    """The name of an item without a description, made when logged."""

    __slots__ = ('func',)

    def __init__(self, func):
        self.func = func

    def __str__(self):
        return name_of(self.func)


def name_of(func):
    """How a log line names the callable `func`: its qualified name, with
    the arguments of a functools.partial; never an address."""
    if isinstance(func, functools.partial):
        arguments = [repr(arg) for arg in func.args] + [
            f'{key}={value!r}' for key, value in func.keywords.items()]
        return f'{name_of(func.func)}({", ".join(arguments)})'
    name = getattr(func, '__qualname__', None)
    if isinstance(name, str):
        return name
    if type(func).__repr__ is not object.__repr__:
        return repr(func)  # an instance that says what it is
    return type(func).__qualname__


def _commit(stats, where, description):
    """Commit what was changed before (or after) an item; whether that
    worked."""
    # Nothing changed (no data manager joined the transaction): the item
    # runs in this very transaction, and no empty commit costs a sync.
    # (`transaction` has no public name for what joined; _resources is it.)
    if not getattr(transaction.get(), '_resources', True):
        return True
    try:
        transaction.commit()
    except ConflictError as e:
        transaction.abort()
        stats.failed += 1
        stats.conflicts += 1
        stats.conflicted += 1
        stats.warning('Conflict in the changes made %s %s, transaction'
                      ' aborted%s: %s', where, description,
                      ', item skipped' if where == 'before' else '', e)
    except Exception as e:
        transaction.abort()
        if outage.unavailable(e):
            raise
        stats.failed += 1
        stats.exception('Error committing the changes made %s %s,'
                        ' transaction aborted%s', where, description,
                        ', item skipped' if where == 'before' else '')
    else:
        return True
    return False


def _run_item(func, description, stats):
    try:
        _, retried = retry.run(func)
    except ConflictError as e:
        stats.failed += 1
        stats.conflicts += retry.ATTEMPTS
        stats.conflicted += 1
        stats.warning('Conflict in %s, transaction aborted after %s'
                      ' attempts: %s', description, retry.ATTEMPTS, e)
    except Exception as e:
        if outage.unavailable(e):
            raise
        stats.failed += 1
        stats.exception('Error in %s, transaction aborted', description)
    else:
        stats.committed += 1
        stats.conflicts += retried


class Collector:
    """What the runs of `transaction_per_item` in a `collect()` block did.

    A context manager: the runs in this thread count in it while the block
    runs.  (A class, not a generator: the loop enters one every tick.)
    """

    # Items committed and failed (`conflicted` of them by a conflict);
    # conflicts, retried or not.  Each instance counts from these: an
    # __init__ would cost every tick a call.
    committed = failed = conflicts = conflicted = 0

    def __enter__(self):
        collectors().append(self)
        return self

    def __exit__(self, *exc_info):
        collectors().remove(self)


_collectors = threading.local()


def collectors():
    """The Collectors that count in the calling thread now, the innermost
    last: the list that the thread keeps, for a loop that puts in and
    takes out a Collector every tick."""
    try:
        return _collectors.stack
    except AttributeError:  # the first in this thread
        _collectors.stack = []
        return _collectors.stack


def collect():
    """Count what the runs of `transaction_per_item` in this thread do
    within the block (``with collect() as collector:``)."""
    return Collector()


class Statistics:
    """What a run of `transaction_per_item` has done so far.

    A long run shows its progress: on a terminal (stderr is a tty) a line
    on stderr that is updated as the run goes on and erased at its end;
    otherwise a progress line at INFO every PROGRESS_INTERVAL seconds.
    """

    def __init__(self, name):
        self.name = name
        self.committed = self.failed = self.conflicts = self.conflicted = 0
        self.started = self.last_progress = time.monotonic()
        self.terminal = _isatty(sys.stderr)
        self.shown = False

    def progress(self):
        """Show the progress if it is time to."""
        now = time.monotonic()
        if self.terminal:
            if (now - self.started >= TERMINAL_DELAY and
                    now - self.last_progress >= TERMINAL_UPDATE):
                self.last_progress = now
                rate = (self.committed + self.failed) / (now - self.started)
                self.show(f'{self.name}: {self.committed} committed,'
                          f' {self.failed} failed, {self.conflicts}'
                          f' conflicts, {rate:.1f} items/s')
        elif now - self.last_progress >= PROGRESS_INTERVAL:
            self.last_progress = now
            log.info('%s so far', self)

    def show(self, text):
        """Replace the progress line on the terminal by `text`."""
        width = shutil.get_terminal_size().columns - 1
        sys.stderr.write(f'\r\x1b[K{text[:width]}')
        sys.stderr.flush()
        self.shown = bool(text)

    def warning(self, *args):
        self.erase()
        log.warning(*args)

    def exception(self, *args):
        self.erase()
        log.exception(*args)

    def erase(self):
        if self.shown:
            self.show('')

    def end(self):
        """Log the summary; count the run in the collectors."""
        self.erase()
        seconds = time.monotonic() - self.started
        log.log(logging.INFO if seconds >= SUMMARY_SECONDS else logging.DEBUG,
                '%s', self)
        for collector in getattr(_collectors, 'stack', ()):
            collector.committed += self.committed
            collector.failed += self.failed
            collector.conflicts += self.conflicts
            collector.conflicted += self.conflicted

    def __str__(self):
        seconds = time.monotonic() - self.started
        items = self.committed + self.failed
        rate = items / seconds if seconds else 0
        return (f'{self.name}: {self.committed} items committed,'
                f' {self.failed} failed, {self.conflicts} conflicts in'
                f' {seconds:.1f} s ({rate:.1f} items/s)')


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False
