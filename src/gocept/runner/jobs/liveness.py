"""Which worker processes live, and what becomes of the jobs of one that
died.

Each worker process has a heartbeat on its database: a thread with a
connection of its own, which writes the process's record every BEAT
seconds (a quarter of `Jobs.dead_after` if that is shorter), in a
transaction that nothing else writes to.  After each beat it sweeps: a
process whose record is older than `Jobs.dead_after` seconds is held dead
(SIGKILL, the OOM killer, a segfault, a lost host), and each job that one
of its workers was running has its attempt ended as 'died', which counts
against the job's retries: it runs again, or, after its retries, is failed,
so that a job that kills its process does not kill every worker in turn.
About every EXPIRE seconds, the sweep also removes the done jobs that are
no longer to be kept: that reads the shards of the done jobs, which every
run changes, so the processes do it seldom, each at times of its own.

Ages are told by the times of the transactions that wrote the records,
which the storage assigns (the ZEO server, the PostgreSQL server of a
RelStorage), so that the hosts' clocks need not agree.
"""

import logging
import random
import threading
import time

import transaction
from persistent.TimeStamp import TimeStamp

from gocept.runner import retry
from gocept.runner.jobs import attempts
from gocept.runner.jobs import store
from gocept.runner.jobs.counts import Counts


log = logging.getLogger('gocept.runner.jobs')

#: Seconds between two heartbeats (and sweeps) of a worker process, at
#: most (a quarter of Jobs.dead_after, if that is shorter).
BEAT = 5
#: Seconds between two removals of the done jobs no longer kept by one
#: worker process, on average (each pause a random half to one and a half
#: of it).
EXPIRE = 60
# Seconds a worker waits for the first heartbeat of its process.
START_TIMEOUT = 10
# Seconds the end of a process waits for its heartbeat's last transaction.
STOP_TIMEOUT = 10
# Tries of the removal of a process's or a worker's record as it stops.
# Those stopped together delete their records from one tree together, and
# the deletes that empty a bucket conflict: more tries than a tick's, so
# that the last ones get through (retry.run's pauses stay under a second
# each, so they end well within STOP_TIMEOUT).
UNREGISTER_ATTEMPTS = 8


def serial_time(obj):
    """When the transaction that last wrote `obj` was committed."""
    # A ghost has no serial yet.
    obj._p_activate()
    return TimeStamp(obj._p_serial).timeTime()


class Liveness:
    """The heartbeat of this process on the database `db` (see the module).
    """

    def __init__(self, db):
        self.db = db
        self.key = store.process_key()
        self.users = 0
        self.dead_after = store.DEAD_AFTER
        self.registered = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        self._warned = set()
        # The attempts its sweeps ended (see gocept.runner.jobs.metrics).
        self.counts = Counts()
        # Where to put what it reads of the queue after each beat, if
        # anything: a gocept.runner.jobs.metrics.Queue.
        self.queue = None
        # When (time.monotonic()) the next sweep removes done jobs.
        self._expire_at = 0.0

    @property
    def interval(self):
        return min(BEAT, self.dead_after / 4)

    def start(self):
        """Start the heartbeat; return when it has registered the process
        (or after START_TIMEOUT seconds, when the storage is away)."""
        # Its connection beside the workers': no warning of a pool too
        # small.
        self.db.setPoolSize(self.db.getPoolSize() + 1)
        self._thread = threading.Thread(
            target=self._run, daemon=True,
            name=f'gocept.runner.jobs heartbeat {self.key}')
        self._thread.start()
        self.registered.wait(START_TIMEOUT)

    def stop(self):
        """Stop the heartbeat; unregister the process if none of its
        workers has a job left."""
        self._stop.set()
        self._thread.join(STOP_TIMEOUT)
        self.db.setPoolSize(max(1, self.db.getPoolSize() - 1))

    def _run(self):
        connection = self.db.open()
        try:
            while True:
                own_time = self._guarded('beat', self._beat, connection)
                if own_time is not None:
                    self._guarded('sweep', self._sweep, connection, own_time)
                if self.queue is not None:
                    self._guarded('reading of the queue', self._read_queue,
                                  connection)
                if self._stop.wait(self.interval):
                    break
            self._guarded('unregister', self._unregister, connection)
        finally:
            transaction.abort()
            connection.close()

    def _guarded(self, what, function, *args):
        try:
            return function(*args)
        except Exception:
            # Once at WARNING with its traceback (a storage away, mostly),
            # then at DEBUG, until it works again.
            level = logging.DEBUG if what in self._warned else logging.WARNING
            self._warned.add(what)
            log.log(level, 'Worker process %s: its %s failed', self.key, what,
                    exc_info=True)
            return None
        finally:
            transaction.abort()

    def _beat(self, connection):
        """Write the record of this process; return when that was."""
        def beat():
            jobs = store.jobs_of(connection, create=True)
            processes = jobs.processes()
            own = processes.get(self.key)
            if own is None:
                if self.registered.is_set():
                    log.warning(
                        'Worker process %s was held dead by others (no'
                        ' heartbeat for %s seconds); its running jobs run'
                        ' elsewhere', self.key, jobs.dead_after)
                own = processes[self.key] = store.ProcessRecord(self.key)
            own.seen = time.time()
            transaction.get().note(
                f'gocept.runner.jobs: heartbeat of {self.key}')
            return jobs, own
        (jobs, own), _ = retry.run(beat, begin=transaction.begin)
        self.dead_after = jobs.dead_after
        self.registered.set()
        self._warned.discard('beat')
        return serial_time(own)

    def _sweep(self, connection, own_time):
        """Fail the jobs of dead processes; remove done jobs no longer
        kept (when EXPIRE seconds or so went by since it last did)."""
        transaction.begin()
        jobs = store.jobs_of(connection)
        dead = [key for key, process in jobs.processes().items()
                if key != self.key and
                own_time - serial_time(process) > jobs.dead_after]
        for key in dead:
            endings = []
            retry.run(lambda: self._bury(connection, key, own_time, endings),
                      begin=transaction.begin)
            for ending in endings:
                ending.log()
                self.counts.ended(ending)
        if time.monotonic() >= self._expire_at:
            self._expire_at = time.monotonic() + random.uniform(
                EXPIRE / 2, EXPIRE * 3 / 2)
            while not self._stop.is_set():
                removed, _ = retry.run(
                    lambda: store.jobs_of(connection).expire(time.time()),
                    begin=transaction.begin)
                if removed < store.EXPIRE_BATCH:
                    break
        self._warned.discard('sweep')

    def _read_queue(self, connection):
        """Read the depth of the queue into `queue`."""
        transaction.begin()
        jobs = store.jobs_of(connection)
        now = time.time()
        if jobs is not None:
            self.queue.state = (jobs.depth(now), now)
        self._warned.discard('reading of the queue')

    def _bury(self, connection, key, own_time, endings):
        """Remove the dead process `key`, ending the attempts its workers
        were running as 'died'."""
        endings.clear()
        jobs = store.jobs_of(connection)
        process = jobs.processes().get(key)
        if process is None:
            return  # buried by another
        age = own_time - serial_time(process)
        if age <= jobs.dead_after:
            return  # it lives again
        now = time.time()
        for worker in process.workers.values():
            outcome = 'died' if len(worker.batch) == 1 else 'died in a batch'
            for job in worker.runs():
                endings.append(attempts.end(
                    jobs, job, outcome, now,
                    f'its worker process {process.host} pid {process.pid}'
                    f' died (no heartbeat for {age:.0f} seconds)'))
            # Written, so that a take of a process that lives after all
            # conflicts with this, rather than leave its jobs where no
            # sweep finds them.
            worker.batch = ()
            worker._p_changed = True
        del jobs.processes()[key]
        log.warning(
            'Worker process %s (%s pid %s) held dead: no heartbeat for %.0f'
            ' seconds; jobs it ran: %s', key, process.host, process.pid, age,
            ', '.join(ending.job.describe() for ending in endings) or 'none')
        transaction.get().note(
            f'gocept.runner.jobs: worker process {key} held dead')

    def _unregister(self, connection):
        """Remove the record of this process, unless a worker left a job
        in it (when the storage was away, say): the sweep of another
        process ends that."""
        def unregister():
            jobs = store.jobs_of(connection)
            own = None if jobs is None else jobs.processes().get(self.key)
            if own is not None and not any(
                    worker.batch for worker in own.workers.values()):
                del jobs.processes()[self.key]
        retry.run(unregister, attempts=UNREGISTER_ATTEMPTS,
                  begin=transaction.begin)


# The heartbeats of this process: id(db) -> Liveness.
_heartbeats = {}
_lock = threading.Lock()


def acquire(db):
    """The Liveness of this process on `db`, started for its first user."""
    with _lock:
        liveness = _heartbeats.get(id(db))
        if liveness is None:
            liveness = _heartbeats[id(db)] = Liveness(db)
            liveness.start()
        liveness.users += 1
        return liveness


def release(liveness):
    """Stop `liveness` when its last user leaves."""
    with _lock:
        liveness.users -= 1
        if liveness.users:
            return
        del _heartbeats[id(liveness.db)]
        liveness.stop()
