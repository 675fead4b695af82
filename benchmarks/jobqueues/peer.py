"""What the modules of the peers in benchmarks/jobs.py share: their
commands, which put jobs (`put`, `produce`, `latency`) and count the
done ones (`check`), each module giving its own way to put one job."""

import json
import random
import sys
import time

import calllog


def produce(put_one, count, workload):
    """Put `count` jobs one at a time, as a web application would when
    users click."""
    first = time.time()
    for seq in range(count):
        put_one(seq, workload)
    return {'first': first, 'last': time.time()}


def latency(put_one, count, workload):
    """Put a job at a time into idle workers; the seconds from each put to
    its job's start."""
    latencies = []
    for seq in range(count):
        time.sleep(random.uniform(0.2, 0.5))
        put_one(seq, workload)
        put = time.time()
        latencies.append(calllog.wait_for_start(seq, put))
    return {'latencies': latencies}


def main(argv, put_one, put_many, check):
    """Run the command of `argv` (COMMAND COUNT WORKLOAD); print its
    result as JSON."""
    command, count, workload = argv
    count = int(count)
    if command == 'put':
        result = put_many(count, workload)
    elif command == 'produce':
        result = produce(put_one, count, workload)
    elif command == 'latency':
        result = latency(put_one, count, workload)
    elif command == 'check':
        result = check(count, workload)
    else:
        sys.exit(f'Unknown command {command}')
    print(json.dumps(result or {}))
