"""What wakes an idle worker: a commit that queued a job.

A worker that finds no due job sleeps until the next one is due, or POLL
seconds (gocept.runner.jobs.worker), and looks again: that poll is the
safety net.  A commit that queues a job (a put, a retry) wakes the idle
workers of its database at once, wherever they run:

- in the committing process, whatever the storage (the threads of a
  FileStorage's workers, a job that puts jobs): the transaction's
  after-commit hook tells them;
- in the other processes of a ZEO server: the commit changed the doorbell
  of a shard of the Jobs container (a BTrees.Length that each job queued
  in the shard changes).  The server tells every client which objects each
  commit changed; the Relay through which the client storage tells its
  database looks for the doorbells among them: an unrelated commit costs a
  dictionary look-up an object;
- in the other processes of a RelStorage on PostgreSQL: the committing
  process sends NOTIFY on CHANNEL after the commit, on a connection of its
  own, with the id of the transaction and the shards it queued jobs in;
  each worker process LISTENs on one of its own, in a thread.  Unrelated
  commits send nothing.

A wake-up is a hint: the worker looks for due jobs at once
(MainLoop.tick_now).  One that is lost (a connection that broke, a worker
just starting) costs at most POLL seconds.

Idle workers that all rushed for the one job queued would all but one
lose the race, and pay a take that conflicts; and each look costs the
database server loads.  So the Watcher keeps what its process knows of
each shard: when a job was last queued in it, and when it was last found
to have no due job (`Watcher.candidates`).  A worker's look finds that out
for the shards it looks at; on a ZEO server, so does every commit of
another process that changed a shard and rang no doorbell, for a take
that leaves a due job in its shard rings again, also when its commit was
merged with a put's (see gocept.runner.jobs.worker).  Workers look only
at the shards that may have a due job, their own share of the shards at
once, the others' in turns; and all of them at least every POLL seconds.
"""

import collections
import logging
import select
import threading
import time
import weakref

import transaction
from ZODB.utils import z64

from gocept.runner import retry
from gocept.runner.wakeup import Wakeup


log = logging.getLogger('gocept.runner.jobs')

#: The PostgreSQL channel on which a committed job is announced.
CHANNEL = 'gocept_runner_jobs'
# The `application_name` of our PostgreSQL connections.
APPLICATION = 'gocept.runner.jobs wake-up'
# The longest payload of a notification that PostgreSQL takes is 8000
# bytes; one naming more shards names none.
MAX_PAYLOAD = 7000
# Seconds a worker that stops waits for its Listener's thread, at most.
STOP_TIMEOUT = 5

# A database -> the Watcher of its workers in this process.
_watchers = {}
# A database -> its Notifier (None: not a RelStorage on PostgreSQL).
_notifiers = weakref.WeakKeyDictionary()
_lock = threading.Lock()


#: A wake-up: the id of the transaction that rang (None: unknown), when
#: it was heard of (time.monotonic()), and the indexes of the shards it
#: queued jobs in (empty: unknown, any).
Ring = collections.namedtuple('Ring', 'tid when shards')


def ring(jobs, index):
    """Ring the doorbell of the shard `index` of `jobs` (a Jobs container)
    in the current transaction: once that has committed, the idle workers
    of the database wake."""
    jobs.bells[index].change(1)
    jar = jobs._p_jar
    txn = (transaction.get() if jar is None else
           jar.transaction_manager.get())
    try:
        shards = txn.data(jobs)
    except KeyError:
        shards = set()
        txn.set_data(jobs, shards)  # one hook per transaction
        txn.addAfterCommitHook(_rang, (jobs, shards))
    shards.add(index)


def _rang(committed, jobs, shards):
    if not committed or jobs._p_jar is None:
        return
    db = jobs._p_jar.db()
    # The doorbells were written by the commit: their serial is its id.
    tid = jobs.bells[min(shards)]._p_serial
    watcher = _watchers.get(db)
    if watcher is not None:
        watcher.wake(tid, frozenset(shards))
    notifier = notifier_of(db)
    if notifier is not None:
        notifier.notify(tid, shards)


def watch(loop, db):
    """Wake `loop` (a MainLoop) whenever a job is queued in `db`; return
    the Watcher of `db`'s workers in this process."""
    with _lock:
        watcher = _watchers.get(db)
        if watcher is None:
            watcher = _watchers[db] = Watcher(db)
            watcher.start()
        watcher.loops = watcher.loops | {loop}
    return watcher


def unwatch(loop, db):
    """No longer wake `loop` for `db`."""
    with _lock:
        watcher = _watchers.get(db)
        if watcher is None:
            return
        watcher.loops = watcher.loops - {loop}
        if watcher.loops:
            return
        del _watchers[db]
    watcher.stop()


class Watcher:
    """The workers (`loops`) of the database `db` in this process, and what
    tells them of jobs queued by other processes (see the module)."""

    def __init__(self, db):
        self.db = db
        # Replaced, never changed: other threads go through it.
        self.loops = frozenset()
        # The oids of the container's doorbells and of its shards -> the
        # index of their shard (see `attend`), replaced, never changed;
        # the oid of the container they are of.
        self.bells = self.shards = {}
        self._container = None
        # A shard's index -> when (time.monotonic()) a job was last queued
        # in it, and when it was last found to have no due job; when a job
        # may have been queued in any (a wake-up of unknown origin).
        self.queued = {}
        self.cleared = {}
        self.anywhere = 0.0
        # The last Ring; replaced, never changed.
        self.rung = None
        self._relay = self._listener = None

    def start(self):
        storage = self.db.storage
        adapter = postgresql_adapter(storage)
        mvcc = getattr(self.db, '_mvcc_storage', storage)
        if adapter is not None:
            self._listener = Listener(adapter, self.wake)
            self._listener.start()
        elif mvcc is not storage and hasattr(storage, 'registerDB'):
            # ZODB's DB has the storage tell its MVCC adapter of others'
            # commits (IStorageDB); the Relay sits in between.
            self._relay = Relay(mvcc, self)
            storage.registerDB(self._relay)

    def stop(self):
        if self._listener is not None:
            self._listener.stop()
        if self._relay is not None:
            try:
                self.db.storage.registerDB(self._relay.target)
            except Exception:
                log.debug('Cannot remove the relay of %r', self.db,
                          exc_info=True)

    def attend(self, jobs):
        """Look out for the doorbells of `jobs` (None: the database has no
        jobs yet); called by a worker that found no due job."""
        if jobs is None or jobs._p_oid == self._container:
            return
        self.shards = {oid: index for index, oid in
                       enumerate(jobs.shard_oids()) if oid is not None}
        self.bells = {bell._p_oid: index for index, bell in
                      enumerate(jobs.bells) if bell._p_oid is not None}
        self._container = jobs._p_oid

    def invalidated(self, tid, oids):
        """Note the shards that the commit `tid` of another process changed
        (`oids`); wake the workers if it rang, or made the container (it
        changed the root)."""
        when = time.monotonic()
        bells, shards = self.bells, self.shards
        rang = set()
        changed = []
        root = False
        for oid in oids:
            index = shards.get(oid)
            if index is not None:
                changed.append(index)
            index = bells.get(oid)
            if index is not None:
                rang.add(index)
            elif oid == z64:
                root = True
        # A commit that took from a shard and left a due job in it rang
        # (see gocept.runner.jobs.worker): one that did not left none.
        self.clear(changed, when)
        if rang or root:
            self.wake(tid, frozenset(rang), when)

    def wake(self, tid=None, shards=frozenset(), when=None):
        """Have every worker look for due jobs: the transaction `tid`
        (None: unknown) queued jobs in the shards of the indexes `shards`
        (none: in any) at `when` (time.monotonic(); None: now)."""
        rung = self.rung
        if tid is not None and rung is not None and rung.tid == tid:
            # Woken already: the committing process hears of its commit
            # from its own hook and from PostgreSQL.
            return
        if when is None:
            when = time.monotonic()
        if tid is None or not shards:
            shards = frozenset()
            self.anywhere = when
        for index in shards:
            self.queued[index] = when
        self.rung = Ring(tid, when, shards)
        for loop in self.loops:
            loop.tick_now()

    def clear(self, shards, when):
        """The shards of the indexes `shards` had no due job as of `when`
        (by time.monotonic(), at or before the start of the transaction
        that found it)."""
        cleared = self.cleared
        for index in shards:
            if cleared.get(index, -1.0) < when:
                cleared[index] = when

    def candidates(self, count):
        """The shards (of `count`) that may have a due job, for all that
        this process knows: index -> since when (time.monotonic())."""
        queued, cleared, anywhere = self.queued, self.cleared, self.anywhere
        found = {}
        for index in range(count):
            since = max(queued.get(index, 0.0), anywhere)
            if since >= cleared.get(index, -1.0):
                found[index] = since
        return found


class Relay:
    """Passes on what a storage tells the database `target` of others'
    commits (ZEO's client storage does), and shows the `watcher` which
    objects changed."""

    def __init__(self, target, watcher):
        self.target = target
        self.watcher = watcher

    def invalidate(self, tid, oids):
        # The database first: a worker woken must see the commit.
        self.target.invalidate(tid, oids)
        self.watcher.invalidated(tid, oids)

    def invalidateCache(self):
        # The client (re)connected: commits may have gone by unseen.
        self.target.invalidateCache()
        self.watcher.wake()

    def __getattr__(self, name):
        return getattr(self.target, name)


def postgresql_adapter(storage):
    """The RelStorage adapter of `storage`, if it is a RelStorage on
    PostgreSQL, else None."""
    # RelStorage has no public name for its adapter.
    adapter = getattr(storage, '_adapter', None)
    if type(adapter).__module__.startswith('relstorage.adapters.postgresql'):
        return adapter
    return None


def notifier_of(db):
    """The Notifier of `db`, or None if it is no RelStorage on PostgreSQL."""
    try:
        return _notifiers[db]
    except KeyError:
        pass
    with _lock:
        if db not in _notifiers:
            adapter = postgresql_adapter(db.storage)
            _notifiers[db] = None if adapter is None else Notifier(adapter)
        return _notifiers[db]


class Notifier:
    """Sends NOTIFY on CHANNEL to the PostgreSQL database of a RelStorage
    (its `adapter`), on a connection of its own that it opens when first
    needed, and again after one broke."""

    def __init__(self, adapter):
        self.adapter = adapter
        self._connection = None
        self._lock = threading.Lock()
        self._warned = False

    def notify(self, tid, shards=()):
        """Tell the workers that listen that the transaction `tid` queued
        jobs in the shards of the indexes `shards`."""
        payload = ' '.join([tid.hex(), ','.join(map(str, sorted(shards)))])
        if len(payload) > MAX_PAYLOAD:
            payload = tid.hex()  # which shards: unknown
        with self._lock:
            error = None
            for _ in range(2):  # a connection that broke, opened again
                try:
                    if self._connection is None:
                        self._connection = self.adapter.connmanager.open(
                            application_name=APPLICATION)
                    connection, cursor = self._connection
                    cursor.execute(f"NOTIFY {CHANNEL}, '{payload}'")
                    connection.commit()
                    return
                except Exception as e:
                    error = e
                    self.close()
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(level, 'Cannot notify the workers of a job queued'
                    ' (%s: %s); they find it when they poll',
                    type(error).__name__, error)

    def close(self):
        if self._connection is not None:
            _close(self._connection)
            self._connection = None


class Listener:
    """LISTENs on CHANNEL to the PostgreSQL database of a RelStorage (its
    `adapter`) in a thread of its own, and calls `wake` for notifications
    (and when it has connected again, for those it may have missed).

    It needs a driver that reads notifications as psycopg2 does
    (``connection.poll()``, ``connection.notifies``).
    """

    def __init__(self, adapter, wake):
        self.adapter = adapter
        self.wake = wake
        self._stop = Wakeup()
        self._stopping = False
        self._thread = None

    def start(self):
        self._stop.open()
        self._thread = threading.Thread(
            target=self._run, name='gocept.runner.jobs wake-up',
            daemon=True)
        self._thread.start()

    def stop(self):
        self._stopping = True
        self._stop.wake()
        # Not for long: a thread that connects to a server gone quiet may
        # take a minute to notice; it ends by itself then (a daemon).
        self._thread.join(STOP_TIMEOUT)
        if not self._thread.is_alive():
            self._stop.close()

    def _run(self):
        pauses = retry.Backoff(0.1, 10)
        connected = None
        failed = False
        while not self._stopping:
            try:
                connected = self.adapter.connmanager.open(
                    application_name=APPLICATION)
                connection, cursor = connected
                if not (callable(getattr(connection, 'poll', None)) and
                        isinstance(getattr(connection, 'notifies', None),
                                   list)):
                    log.info('Workers of %s poll for new jobs: its driver'
                             ' does not read notifications as psycopg2'
                             ' does', self.adapter)
                    return
                cursor.execute(f'LISTEN {CHANNEL}')
                connection.commit()
                if failed:
                    self.wake()  # for the jobs queued while we were away
                failed = False
                pauses.reset()
                self._listen(connection)
            except Exception as e:
                failed = True
                pause = next(pauses)
                log.debug('Listening for new jobs failed (%s: %s); again in'
                          ' %s seconds', type(e).__name__, e, pause)
                self._wait(pause)
            finally:
                if connected is not None:
                    _close(connected)
                    connected = None

    def _listen(self, connection):
        while not self._stopping:
            readable, _, _ = select.select([connection, self._stop], [], [])
            if connection in readable:
                connection.poll()
                # Each names the shards of its commit.
                notifies = connection.notifies[:]
                del connection.notifies[:]
                for notify in notifies:
                    self.wake(*_ring(notify.payload))
            if self._stop in readable:
                self._stop.sleep(0)

    def _wait(self, seconds):
        if not self._stopping:
            self._stop.sleep(seconds)


def _ring(payload):
    """The transaction id a notification carries and the indexes of the
    shards it names: None and none if it carries no valid id."""
    tid, _, shards = str(payload).partition(' ')
    try:
        tid = bytes.fromhex(tid)
        shards = frozenset(int(index) for index in shards.split(',')
                           if index)
    except ValueError:
        return None, frozenset()
    if len(tid) != 8:
        return None, frozenset()
    return tid, shards


def _close(connected):
    connection, cursor = connected
    for thing in cursor, connection:
        try:
            thing.close()
        except Exception:
            pass
