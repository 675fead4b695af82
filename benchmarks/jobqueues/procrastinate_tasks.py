"""procrastinate in benchmarks/jobs.py: the task, its workers and the
commands of peer.py, on the PostgreSQL database $JOBBENCH_PG (a libpq
connection string).

    python procrastinate_tasks.py schema
    python procrastinate_tasks.py work CONCURRENCY
    python procrastinate_tasks.py put|produce|latency|check COUNT WORKLOAD
"""

import logging
import os
import sys

import procrastinate
import psycopg

import calllog
import peer


app = procrastinate.App(connector=procrastinate.PsycopgConnector(
    conninfo=os.environ['JOBBENCH_PG']))

calllog.ready()


@app.task(name='run', queue='bench')
def run(seq, workload):
    return calllog.call(seq, workload)


def put_one(seq, workload):
    run.defer(seq=seq, workload=workload)


def put_many(count, workload):
    run.batch_defer(*[{'seq': seq, 'workload': workload}
                      for seq in range(count)])


def check(count, workload):
    """procrastinate's own count of its jobs by status (done twice: see
    the call log)."""
    with psycopg.connect(os.environ['JOBBENCH_PG']) as connection:
        rows = connection.execute(
            'SELECT status, count(*) FROM procrastinate_jobs GROUP BY status'
        ).fetchall()
    return {str(status): n for status, n in rows}


def main(argv):
    if argv[0] == 'work':
        logging.basicConfig(level=logging.WARNING)
        app.run_worker(queues=['bench'], concurrency=int(argv[1]))
        return
    with app.open():
        if argv[0] == 'schema':
            app.schema_manager.apply_schema()
            print('{}')
        else:
            peer.main(argv, put_one, put_many, check)


if __name__ == '__main__':
    # procrastinate wants its App in a module of its own name.
    from procrastinate_tasks import main as main_of_module
    main_of_module(sys.argv[1:])
