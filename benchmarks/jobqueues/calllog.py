"""What every job of benchmarks/jobs.py does, and the log of its calls.

A job gets its sequence number and its workload: 'noop' does nothing,
'sleep' waits 20 ms, 'write' returns a result for the job system to store.
Each call of a job appends a line ``SEQ START END`` (seconds since the
epoch) to ``calls-PID.log`` in the directory $JOBBENCH_DIR, outside any
transaction: the log counts the calls that ran to their end, whether or
not the job system then kept their outcome.  Standard library only: the
driver reads the logs with the same module.
"""

import os
import time


SLEEP = 0.02
RESULT = 'r' * 100

_log = {}


def call(seq, workload):
    """Do the work of the job `seq`; log the call; return its result."""
    started = time.time()
    if workload == 'sleep':
        time.sleep(SLEEP)
    result = f'{seq}:{RESULT}' if workload == 'write' else None
    _write(f'{seq} {started:.6f} {time.time():.6f}\n')
    return result


def _write(line):
    pid = os.getpid()
    fd = _log.get(pid)
    if fd is None:
        path = os.path.join(os.environ['JOBBENCH_DIR'], f'calls-{pid}.log')
        # One write() of a short line to a file opened for appending is not
        # torn by the writes of other threads and processes.
        fd = _log[pid] = os.open(
            path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line.encode())


def ready():
    """Say that this worker process has started, if it is one (the
    driver waits for that before it feeds jobs); a module of jobs calls it
    when imported."""
    if not os.environ.get('JOBBENCH_WORKER'):
        return
    path = os.path.join(os.environ['JOBBENCH_DIR'], f'ready-{os.getpid()}')
    with open(path, 'w'):
        pass


def ready_processes(directory):
    """How many worker processes said they are ready."""
    return sum(1 for name in os.listdir(directory)
               if name.startswith('ready-'))


def calls(directory):
    """Every call logged in `directory`: (seq, started, ended, pid)."""
    found = []
    for name in os.listdir(directory):
        if not (name.startswith('calls-') and name.endswith('.log')):
            continue
        pid = int(name[len('calls-'):-len('.log')])
        with open(os.path.join(directory, name)) as f:
            for line in f:
                if not line.endswith('\n'):
                    continue  # being written
                seq, started, ended = line.split()
                found.append((int(seq), float(started), float(ended), pid))
    return found


def wait_for_start(seq, since, timeout=30):
    """Seconds from `since` to the start of the job `seq`, from the call
    log (looked at every millisecond)."""
    directory = os.environ['JOBBENCH_DIR']
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for found, started, _, _ in calls(directory):
            if found == seq:
                return started - since
        time.sleep(0.001)
    raise RuntimeError(f'Job {seq} did not start within {timeout} s')
