"""RQ in benchmarks/jobs.py: the job, its workers and the commands of
peer.py, on the Redis server on the port $JOBBENCH_REDIS.

    python rq_tasks.py work
    python rq_tasks.py put|produce|latency|check COUNT WORKLOAD

A worker is RQ's SimpleWorker, which runs jobs in its own process, as
gocept.runner's workers do (RQ's default Worker forks a child per job).
"""

import os
import sys

import redis
import rq

import calllog
import peer


QUEUE = 'bench'
# The job by its name: this module may run as __main__.
RUN = 'rq_tasks.run'

calllog.ready()


def run(seq, workload):
    return calllog.call(seq, workload)


def queue():
    connection = redis.Redis(port=int(os.environ['JOBBENCH_REDIS']))
    return rq.Queue(QUEUE, connection=connection)


def put_one(seq, workload, q=None):
    (q or queue()).enqueue(RUN, seq, workload, job_id=f'job-{seq}')


def put_many(count, workload):
    q = queue()
    q.enqueue_many([
        rq.Queue.prepare_data(RUN, (seq, workload), job_id=f'job-{seq}')
        for seq in range(count)])


def check(count, workload):
    """RQ's own count of finished and failed jobs (done twice: see the
    call log)."""
    q = queue()
    return {'finished': q.finished_job_registry.count,
            'failed': q.failed_job_registry.count}


def work():
    q = queue()
    rq.SimpleWorker([q], connection=q.connection).work(
        logging_level='WARNING')


if __name__ == '__main__':
    if sys.argv[1:] == ['work']:
        work()
    else:
        q = queue()
        peer.main(sys.argv[1:],
                  lambda seq, workload: put_one(seq, workload, q),
                  put_many, check)
