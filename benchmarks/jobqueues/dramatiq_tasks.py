"""dramatiq in benchmarks/jobs.py: the actor and the commands of peer.py,
on the Redis server on the port $JOBBENCH_REDIS.

    dramatiq dramatiq_tasks --processes P --threads T   (the workers)
    python dramatiq_tasks.py put|produce|latency|check COUNT WORKLOAD
"""

import os
import sys

import dramatiq
from dramatiq.brokers.redis import RedisBroker

import calllog
import peer


broker = RedisBroker(host='127.0.0.1', port=int(os.environ['JOBBENCH_REDIS']))
dramatiq.set_broker(broker)

calllog.ready()


@dramatiq.actor(queue_name='bench', max_retries=0)
def run(seq, workload):
    return calllog.call(seq, workload)


def put_one(seq, workload):
    run.send(seq, workload)


def put_many(count, workload):
    for seq in range(count):
        run.send(seq, workload)


def check(count, workload):
    """dramatiq keeps no record of done messages: the call log tells."""
    return {}


if __name__ == '__main__':
    # The actor is known by its name, 'run', also from __main__.
    peer.main(sys.argv[1:], put_one, put_many, check)
