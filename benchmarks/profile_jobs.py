#!/usr/bin/env python3
"""Profile: where the time of a job goes.

    .venv/bin/python benchmarks/profile_jobs.py [--jobs N]
        [--engines zeo pg] [--top N]

Run it with a Python that has this checkout and its ``zeo`` and
``relstorage`` extras.  For each engine, a ZEO server or RelStorage on a
PostgreSQL server (gocept.runner.testing's, fresh each time), it puts N
no-op jobs of benchmarks/jobqueues/gocept_tasks.py in one transaction and
drains them with one ``gocept-jobs work --burst`` process, twice: once
plain, for jobs per second and the CPU time of the worker process and of
the server (all its processes) per job; once under cProfile, for what a
job costs in the worker: the commits of a transaction, the commits that
reached the storage, the loads of objects, and the seconds spent in them
(waiting for the server, mostly), and the functions with the most time of
their own.  On a busy machine the rates swing; the counts do not.
"""

import argparse
import contextlib
import os
import pstats
import subprocess
import sys
import tempfile
import time

from gocept.runner import testing


HERE = os.path.dirname(os.path.abspath(__file__))
QUEUES = os.path.join(HERE, 'jobqueues')
SITE_ZCML = os.path.join(HERE, 'site.zcml')
# What the profile counts per job: (label, file name ending, function).
COUNTED = [
    ('transaction commits', 'transaction/_transaction.py', 'commit'),
    ('storage commits', 'ZODB/Connection.py', 'tpc_finish'),
    ('object loads', 'ZODB/Connection.py', 'setstate'),
]


class Server:
    """The database server of `engine` in `directory`."""

    def __init__(self, engine, directory):
        if engine == 'zeo':
            self.server = testing.ZEOServer(directory)
            self.server.start()
            self.zodb = self.server.zodb_section()
        else:
            self.server = testing.PostgreSQLServer(directory)
            self.server.start()
            self.server.create_database('jobs')
            self.zodb = self.server.zodb_section('jobs')

    def cpu(self):
        """The CPU seconds of the server's processes so far (those of
        PostgreSQL's backends that ended, too)."""
        pid = self.server.process.pid
        ticks = 0
        for entry in os.listdir('/proc'):
            if not entry.isdigit():
                continue
            try:
                with open(f'/proc/{entry}/stat') as f:
                    fields = f.read().rsplit(')', 1)[1].split()
            except OSError:
                continue
            if int(entry) == pid or int(fields[1]) == pid:
                ticks += sum(int(field) for field in fields[11:15])
        return ticks / os.sysconf('SC_CLK_TCK')

    def stop(self):
        self.server.stop()


@contextlib.contextmanager
def serving(engine):
    """A fresh Server of `engine` in a temporary directory that the user
    postgres can read: yield it and the directory."""
    with tempfile.TemporaryDirectory(
            prefix='gocept.runner.bench.', dir='/tmp') as directory:
        os.chmod(directory, 0o755)
        server = Server(engine, directory)
        try:
            yield server, directory
        finally:
            server.stop()


def configure(server, directory):
    """Write the zope.conf of a trial on `server` in `directory`; return
    its path and the environment of the trial's processes."""
    conf = os.path.join(directory, 'zope.conf')
    with open(conf, 'w') as f:
        f.write(f'site-definition {SITE_ZCML}\n{server.zodb}\n'
                '<eventlog>\n  level WARNING\n  <logfile>\n'
                f'    path {directory}/worker.log\n  </logfile>\n'
                '</eventlog>\n')
    env = dict(os.environ, JOBBENCH_DIR=directory, PYTHONPATH=os.pathsep.join(
        filter(None, [QUEUES, os.environ.get('PYTHONPATH')])))
    return conf, env


def drain(server, directory, count, profile=None):
    """Put `count` jobs and drain them with one worker process; return
    its seconds and CPU seconds, and the server's CPU seconds."""
    conf, env = configure(server, directory)
    for command in ('setup', 'put'):
        subprocess.run(
            [sys.executable, os.path.join(QUEUES, 'gocept_tasks.py'), conf,
             command, str(count), 'noop'],
            env=env, check=True, stdout=subprocess.DEVNULL)
    args = ['-m', 'gocept.runner.jobs', 'work', '-C', conf, '--burst',
            '--import', 'gocept_tasks']
    if profile:
        args = ['-m', 'cProfile', '-o', profile] + args
    server_before = server.cpu()
    before = os.times()
    began = time.monotonic()
    subprocess.run([sys.executable] + args, env=env, check=True)
    seconds = time.monotonic() - began
    after = os.times()
    cpu = (after.children_user + after.children_system
           - before.children_user - before.children_system)
    return seconds, cpu, server.cpu() - server_before


def counted(stats, count):
    """Lines: what COUNTED names, per job, with its seconds per job."""
    lines = []
    for label, ending, name in COUNTED:
        calls = seconds = 0
        for (path, _, function), row in stats.stats.items():
            if function == name and path.endswith(ending):
                calls += row[1]
                seconds += row[3]
        lines.append(f'  {label:<22} {calls / count:5.2f} a job,'
                     f' {seconds / count * 1000:6.2f} ms a job')
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--jobs', type=int, default=2000)
    parser.add_argument('--engines', nargs='+', choices=('zeo', 'pg'),
                        default=['zeo', 'pg'])
    parser.add_argument('--top', type=int, default=15,
                        help='functions with the most time of their own')
    args = parser.parse_args()
    for engine in args.engines:
        with serving(engine) as (server, directory):
            plain = os.path.join(directory, 'plain')
            profiled = os.path.join(directory, 'profiled')
            os.mkdir(plain)
            os.mkdir(profiled)
            seconds, cpu, server_cpu = drain(server, plain, args.jobs)
            profile = os.path.join(directory, 'profile')
            drain(server, profiled, args.jobs, profile)
            print(f'{engine}: {args.jobs} jobs, one worker:'
                  f' {args.jobs / seconds:.0f} jobs/s;'
                  f' {seconds / args.jobs * 1000:.2f} ms a job, of which'
                  f' CPU {cpu / args.jobs * 1000:.2f} ms in the worker and'
                  f' {server_cpu / args.jobs * 1000:.2f} ms in the server')
            stats = pstats.Stats(profile, stream=sys.stdout)
            print('\n'.join(counted(stats, args.jobs)))
            stats.sort_stats('tottime').print_stats(args.top)


if __name__ == '__main__':
    main()
