"""Several runners sharing one database, on ZEO and on RelStorage/PostgreSQL.

    python3 benchmarks/scale.py [--quick] [--processes N...] [--engines E...]
        [--versions V...] [--seconds S] [--jobs J] [--io-jobs J]
        [--feed-jobs J]

For 1, 2, 4 and 8 (or N...) runner processes, on a ZEO server and on a
PostgreSQL server (gocept.runner.testing's ZEOServer and PostgreSQLServer,
a fresh database each time), under the released gocept.runner 3.0 and this
checkout, the runners go through these phases together (see
scale_worker.py):

counter  one shared counter, S seconds: commits/s and wasted ticks;
own      a counter of each runner's own, S seconds: commits/s;
queue    J jobs from a gocept.runner.queue.Queue: jobs/s and wasted calls;
io       J jobs that wait 20 ms each: jobs/s;
feed     J jobs that a producer process puts, one per transaction, while
         the runners take them: jobs/s, wasted calls of the runners and of
         the producer.

A wasted call is a worker call whose commit conflicted.  Every job must be
done exactly once and the shared counter must equal the commits, else the
benchmark fails.  Writes benchmarks/scale-results.txt.  The virtualenvs are
made on first use (see venvs.py); the driver runs itself in venv-this.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import venvs


HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, 'scale_worker.py')
RESULTS = os.path.join(HERE, 'scale-results.txt')
VERSIONS = ('3.0', 'this')
ENGINES = ('zeo', 'pg')
PHASES = ('counter', 'own', 'queue', 'io', 'feed')
TIMED = ('counter', 'own')

# What both versions can load: no principal registry (3.0 lacks it).
SITE_ZCML = """\
<configure xmlns="http://namespaces.zope.org/zope">
  <include package="zope.component" file="meta.zcml" />
  <include package="zope.component" />
  <include package="zope.security" file="meta.zcml" />
  <include package="zope.traversing" />
  <include package="zope.container" />
  <include package="zope.app.appsetup" />
  <securityPolicy
      component="zope.security.simplepolicies.PermissiveSecurityPolicy" />
</configure>
"""


class ZEO:
    """A fresh ZEO server for each trial."""

    name = 'ZEO'

    def start(self, directory):
        from gocept.runner.testing import ZEOServer
        self.server = ZEOServer(directory)
        self.server.start()

    def zodb(self, name):
        return self.server.zodb_section(client_label=name)

    def stop(self):
        self.server.stop()

    def close(self):
        pass


class PostgreSQL:
    """One PostgreSQL server for the run, a fresh database for each trial."""

    name = 'PostgreSQL'

    def __init__(self):
        from gocept.runner.testing import PostgreSQLServer

        # Under /tmp, where the user postgres reaches it (as root).
        self.directory = tempfile.mkdtemp(prefix='scale-pg.', dir='/tmp')
        self.server = PostgreSQLServer(self.directory)
        self.server.start()
        self.trials = 0

    def start(self, directory):
        self.trials += 1
        self.dbname = f'trial{self.trials}'
        self.server.create_database(self.dbname)

    def zodb(self, name):
        return self.server.zodb_section(self.dbname)

    def stop(self):
        self.server.drop_database(self.dbname)

    def close(self):
        self.server.stop()
        shutil.rmtree(self.directory)


def zope_conf(directory, engine, name):
    path = os.path.join(directory, f'{name}.conf')
    with open(path, 'w') as f:
        f.write(f'site-definition {directory}/site.zcml\n')
        f.write(engine.zodb(name))
        f.write('<eventlog>\n'
                '  <logfile>\n'
                f'    path {directory}/{name}.log\n'
                '  </logfile>\n'
                '</eventlog>\n')
    return path


def wait_for(paths, processes, timeout=600):
    deadline = time.monotonic() + timeout
    while not all(os.path.exists(path) for path in paths):
        for process in processes:
            if process.poll():
                raise RuntimeError(f'{process.args} exited with'
                                   f' {process.returncode}')
        if time.monotonic() > deadline:
            raise RuntimeError(f'Timed out waiting for {paths}')
        time.sleep(0.01)


def trial(engine, version, size, args, directory):
    """Run `size` runners through the phases; return a result per phase."""
    python = venvs.python(version)
    os.makedirs(directory)
    with open(os.path.join(directory, 'site.zcml'), 'w') as f:
        f.write(SITE_ZCML)
    engine.start(directory)
    try:
        names = [f'runner-{i}' for i in range(size)]
        subprocess.run(
            [python, WORKER, 'setup', zope_conf(directory, engine, 'setup'),
             str(args.jobs), str(args.io_jobs)] + names, check=True)
        processes = [
            subprocess.Popen([python, WORKER, 'run',
                              zope_conf(directory, engine, name), name,
                              directory] + list(PHASES))
            for name in names]
        processes.append(subprocess.Popen(
            [python, WORKER, 'produce',
             zope_conf(directory, engine, 'producer'), directory,
             str(args.feed_jobs)]))
        try:
            results = {phase: run_phase(phase, names, processes, args,
                                        directory)
                       for phase in PHASES}
            for process in processes:
                if process.wait(600) != 0:
                    raise RuntimeError(f'{process.args} exited with'
                                       f' {process.returncode}')
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        check(engine, names, results, args)
    finally:
        engine.stop()
    return results


def run_phase(phase, names, processes, args, directory):
    parties = names + (['producer'] if phase == 'feed' else [])
    wait_for([os.path.join(directory, f'ready-{phase}-{name}')
              for name in parties], processes)
    started = time.time()
    go = os.path.join(directory, f'go-{phase}')
    with open(go + '.tmp', 'w') as f:
        f.write(repr(started + args.seconds))
    os.rename(go + '.tmp', go)
    paths = {name: os.path.join(directory, f'{phase}-{name}.json')
             for name in parties}
    wait_for(paths.values(), processes)
    reports = {}
    for name, path in paths.items():
        with open(path) as f:
            reports[name] = json.load(f)
    producer = reports.pop('producer', None)
    calls = sum(r['calls'] for r in reports.values())
    commits = sum(r['commits'] for r in reports.values())
    if phase in TIMED:
        seconds = args.seconds
    else:
        seconds = max(r['finished'] for r in reports.values()) - started
    result = {'calls': calls, 'commits': commits, 'seconds': seconds,
              'rate': commits / seconds}
    waits = sorted(w for r in reports.values() for w in r['waits'])
    if waits:
        result['wait_median'] = waits[len(waits) // 2]
        result['wait_max'] = waits[-1]
    if producer is not None:
        result['producer_calls'] = producer['calls']
        result['producer_commits'] = producer['commits']
    return result


def check(engine, names, results, args):
    """Every job done exactly once, the shared counter what was committed."""
    import ZODB.config
    db = ZODB.config.databaseFromString(engine.zodb('check'))
    try:
        with db.transaction() as conn:
            root = conn.root()
            shared = root['shared']['value']
            if shared != results['counter']['commits']:
                raise RuntimeError(
                    f'Lost updates: the shared counter is {shared}, the'
                    f' runners committed {results["counter"]["commits"]}')
            for phase, jobs in (('queue', args.jobs), ('io', args.io_jobs),
                                ('feed', args.feed_jobs)):
                done = [(job, count) for name in names
                        for job, count in root[f'{phase}-done'][name].items()]
                if (sorted(job for job, count in done) != list(range(jobs))
                        or {count for job, count in done} != {1}
                        or len(root[phase])):
                    raise RuntimeError(f'{phase}: not every job done once')
    finally:
        db.close()


def share(wasted, calls):
    return f'{100 * wasted / calls:5.1f}%' if calls else '    -'


COLUMNS = (
    ('engine', 10), ('N', 2), ('version', 7),
    ('counter/s', 9), ('wasted', 7), ('own/s', 6),
    ('queue/s', 7), ('wasted', 7), ('io/s', 5),
    ('feed/s', 6), ('wasted', 7), ('producer', 8), ('waited', 11),
)


def combine(rounds):
    """One result of the rounds: the median rate, the calls and commits
    of all, the median wait and the longest."""
    combined = {}
    for phase in PHASES:
        results = [r[phase] for r in rounds]
        combined[phase] = phase_result = {
            key: sum(r[key] for r in results) for key in results[0]
            if key.endswith(('calls', 'commits'))}
        phase_result['rate'] = statistics.median(r['rate'] for r in results)
        if 'wait_max' in results[0]:
            phase_result['wait_median'] = statistics.median(
                r['wait_median'] for r in results)
            phase_result['wait_max'] = max(r['wait_max'] for r in results)
    return combined


def row(engine, size, version, r):
    counter, queue, feed = r['counter'], r['queue'], r['feed']
    cells = (
        {'zeo': ZEO.name, 'pg': PostgreSQL.name}[engine], size, version,
        f'{counter["rate"]:.0f}',
        share(counter['calls'] - counter['commits'], counter['calls']),
        f'{r["own"]["rate"]:.0f}',
        f'{queue["rate"]:.0f}',
        share(queue['calls'] - queue['commits'], queue['calls']),
        f'{r["io"]["rate"]:.0f}',
        f'{feed["rate"]:.0f}',
        share(feed['calls'] - feed['commits'], feed['calls']),
        share(feed['producer_calls'] - feed['producer_commits'],
              feed['producer_calls']),
        f'{feed["wait_median"]:.2f}/{feed["wait_max"]:.2f}',
    )
    return '  '.join(f'{cell:>{width}}' if index > 2 else f'{cell:<{width}}'
                     for index, (cell, (_, width))
                     in enumerate(zip(cells, COLUMNS)))


def versions_line():
    from importlib.metadata import version

    from gocept.runner.testing import postgresql_bin
    packages = ', '.join(f'{name} {version(name)}' for name in (
        'ZODB', 'ZEO', 'RelStorage', 'psycopg2-binary', 'BTrees'))
    postgres = subprocess.run(
        [os.path.join(postgresql_bin(), 'postgres'), '--version'],
        capture_output=True, text=True).stdout.strip()
    return f'{packages}; {postgres}'


def cpu():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def report(results, args, load_before, load_after, elapsed):
    from gocept.runner.queue import Queue
    lines = [
        'Runners sharing one database; per engine, processes (N) and version',
        f'{args.rounds} trial(s), each on a fresh database, the versions'
        ' alternating; rates are the median of the trials, wasted shares'
        ' of all.',
        'counter/s: commits per second, every',
        f'tick incrementing one shared counter ({args.seconds:g} s); own/s:'
        ' each runner its own counter;',
        f'queue/s: jobs per second draining {args.jobs} jobs of a'
        ' gocept.runner.queue.Queue;',
        f'io/s: the same for {args.io_jobs} jobs that wait 20 ms each;'
        f' feed/s: {args.feed_jobs} jobs that one',
        'producer process puts, one per transaction, while the runners'
        ' take them.',
        'wasted: worker calls whose commit conflicted, in % of the calls'
        ' (producer: its own).',
        'waited: seconds from the put of a feed job to its take, median/max'
        f' (Queue.patience {Queue.patience:g} s).',
        'Every job was done exactly once, the shared counter equals the'
        ' commits.',
        '3.0 runs with the queue module of this checkout (3.0 has none).',
        '',
        f'Date: {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())};'
        f' {cpu()}, {os.cpu_count()} CPUs; {platform.system()}'
        f' {platform.release()}',
        f'Python {platform.python_version()}; {versions_line()}',
        f'load average before {load_before:.1f}, after {load_after:.1f};'
        f' the run took {elapsed:.0f} s.',
        '',
        '  '.join(f'{title:>{width}}' if index > 2 else f'{title:<{width}}'
                  for index, (title, width) in enumerate(COLUMNS)),
    ]
    for key in dict.fromkeys(key for key, result in results):
        lines.append(row(*key, combine(
            [result for other, result in results if other == key])))
    return '\n'.join(lines) + '\n'


def arguments():
    """The command line's options (a bad one or --help ends the program
    here, before any virtualenv is made)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true',
                        help='fewer jobs and seconds, N = 1 and 8')
    parser.add_argument('--processes', type=int, nargs='+')
    parser.add_argument('--engines', nargs='+', choices=ENGINES,
                        default=list(ENGINES))
    parser.add_argument('--versions', nargs='+', choices=VERSIONS,
                        default=list(VERSIONS))
    parser.add_argument('--rounds', type=int)
    parser.add_argument('--seconds', type=float)
    parser.add_argument('--jobs', type=int)
    parser.add_argument('--io-jobs', type=int)
    parser.add_argument('--feed-jobs', type=int)
    return parser.parse_args()


def main():
    args = arguments()
    defaults = ({'processes': [1, 8], 'rounds': 1, 'seconds': 2, 'jobs': 300,
                 'io_jobs': 100, 'feed_jobs': 200} if args.quick else
                {'processes': [1, 2, 4, 8], 'rounds': 2, 'seconds': 3,
                 'jobs': 1000,
                 'io_jobs': 200, 'feed_jobs': 300})
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    work = os.path.join(venvs.WORK, 'scale')
    shutil.rmtree(work, ignore_errors=True)
    for version in args.versions:
        venvs.python(version)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    results = []
    engines = {'zeo': ZEO()}
    if 'pg' in args.engines:
        engines['pg'] = PostgreSQL()
    try:
        for round_ in range(args.rounds):
            for name in args.engines:
                engine = engines[name]
                for size in args.processes:
                    # Alternate which version goes first.
                    for version in args.versions[::(-1) ** round_]:
                        directory = os.path.join(
                            work, f'{name}-{size}-{version}-{round_}')
                        result = trial(engine, version, size, args,
                                       directory)
                        shutil.rmtree(directory)
                        print(json.dumps([name, size, version, result]),
                              file=sys.stderr, flush=True)
                        results.append(((name, size, version), result))
    finally:
        for engine in engines.values():
            engine.close()
    results.sort(key=lambda item: (
        args.engines.index(item[0][0]), item[0][1],
        args.versions.index(item[0][2])))
    text = report(results, args, load_before, os.getloadavg()[0],
                  time.monotonic() - started)
    with open(RESULTS, 'w') as f:
        f.write(text)
    print(text)


if __name__ == '__main__':
    arguments()
    this = venvs.python('this')
    if sys.prefix != os.path.dirname(os.path.dirname(this)):
        os.execv(this, [this] + sys.argv)
    main()
