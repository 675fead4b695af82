"""gocept.runner.jobs in benchmarks/jobs.py: the job, and the commands
that put jobs and check them.

    python gocept_tasks.py ZOPE_CONF setup|put|produce|latency|check COUNT
        WORKLOAD

Workers are ``gocept-jobs work --import gocept_tasks`` (this directory on
PYTHONPATH).  The job counts its calls in the call log (see calllog); with
the workload 'write', it also adds one to a counter of its own in the
database, which shows how often its changes were committed.
"""

import json
import random
import sys
import time

import persistent
import transaction
import zope.component.hooks

from gocept.runner import environment
from gocept.runner.jobs import job
from gocept.runner.jobs import store

import calllog


calllog.ready()


class Tally(persistent.Persistent):
    """How often the changes of the job that got it were committed."""

    count = 0


@job
def run(seq, workload, tally=None):
    result = calllog.call(seq, workload)
    if tally is not None:
        tally.count += 1
    return result


def put_one(seq, workload):
    """Put a job in a transaction of its own; return its id."""
    for attempt in transaction.manager.attempts():
        with attempt:
            job_id = run.delay(
                seq, workload, Tally() if workload == 'write' else None)
    return job_id


def setup(count, workload):
    """Make the Jobs container (before the workers start, which would
    conflict making it)."""
    transaction.begin()
    store.jobs_of(zope.component.hooks.getSite()._p_jar, create=True)
    transaction.commit()
    return {}


def put(count, workload):
    """Put `count` jobs in one transaction."""
    transaction.begin()
    for seq in range(count):
        run.delay(seq, workload, Tally() if workload == 'write' else None)
    transaction.commit()
    return {}


def produce(count, workload):
    """Put `count` jobs, one to a transaction, as a web application would
    when users click."""
    first, cpu = time.time(), time.process_time()
    for seq in range(count):
        put_one(seq, workload)
    return {'first': first, 'last': time.time(),
            'cpu': time.process_time() - cpu}


def latency(count, workload):
    """Put a job at a time into idle workers; the seconds from each put's
    commit to its job's start, and to the start of its take (when its
    first attempt began)."""
    latencies, puts = [], []
    for seq in range(count):
        time.sleep(random.uniform(0.2, 0.5))
        job_id = put_one(seq, workload)
        put = time.time()
        latencies.append(calllog.wait_for_start(seq, put))
        puts.append((job_id, put))
    transaction.begin()
    jobs = store.jobs_of(zope.component.hooks.getSite()._p_jar)
    to_take = [jobs.get(job_id).attempts[0].started - put
               for job_id, put in puts]
    transaction.abort()
    return {'latencies': latencies, 'to_take': to_take}


def check(count, workload):
    """The jobs not done (or, with 'write', whose change was not
    committed), those done more than once (or whose change was committed
    twice), and the attempts of all."""
    transaction.begin()
    jobs = store.jobs_of(zope.component.hooks.getSite()._p_jar)
    done, twice = set(), set()
    attempts = 0
    outcomes = {}
    for record in jobs.records():
        seq = record.args[0]
        attempts += len(record.attempts)
        for attempt in record.attempts:
            if attempt.outcome != 'done':
                outcomes[attempt.outcome] = outcomes.get(
                    attempt.outcome, 0) + 1
        finished = sum(1 for a in record.attempts if a.outcome == 'done')
        committed = record.args[2].count if workload == 'write' else 1
        if record.state == 'done' and finished and committed:
            done.add(seq)
        if finished > 1 or committed > 1:
            twice.add(seq)
    transaction.abort()
    return {
        'done': len(done & set(range(count))),
        'lost': len(set(range(count)) - done),
        'twice': len(twice),
        'attempts': attempts,
        'repeated': sum(outcomes.values()),
        'outcomes': outcomes,
    }


COMMANDS = {'setup': setup, 'put': put, 'produce': produce, 'latency': latency,
            'check': check}


def main(argv):
    conf, command, count, workload = argv
    with environment.application(conf) as root:
        zope.component.hooks.setSite(root)
        try:
            result = COMMANDS[command](int(count), workload)
        finally:
            zope.component.hooks.setSite(None)
    print(json.dumps(result))


if __name__ == '__main__':
    # The job is registered under this module's name, not __main__'s.
    from gocept_tasks import main as main_of_module
    main_of_module(sys.argv[1:])
