"""Runners sharing one ZEO server: commits per second and wasted ticks.

    python3 benchmarks/zeo.py [--seconds S] [--rounds R] [--processes N...]

1, 2, 4 and 8 (or N...) runner processes increment one shared plain-int
counter (so that concurrent ticks conflict) and a count of their own, on
every tick, for S seconds, on a fresh ZEO server each time; under the released
gocept.runner 3.0 and under this checkout, alternating, R rounds.  A
wasted tick is a worker call whose commit conflicted.  Writes
benchmarks/zeo-results.txt.  The virtualenvs are made on first use (see
venvs.py); the driver runs itself in venv-this, for
gocept.runner.testing.ZEOServer.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

import venvs


HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, 'zeo_worker.py')
RESULTS = os.path.join(HERE, 'zeo-results.txt')
IMPLEMENTATIONS = ('3.0', 'this')

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


def zope_conf(directory, server, name):
    path = os.path.join(directory, f'{name}.conf')
    with open(path, 'w') as f:
        f.write(f'site-definition {directory}/site.zcml\n')
        f.write(server.zodb_section(client_label=name))
        f.write('<eventlog>\n'
                '  <logfile>\n'
                f'    path {directory}/{name}.log\n'
                '  </logfile>\n'
                '</eventlog>\n')
    return path


def wait_for(paths, processes, timeout=300):
    deadline = time.monotonic() + timeout
    while not all(os.path.exists(path) for path in paths):
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f'{process.args} exited early')
        if time.monotonic() > deadline:
            raise RuntimeError('The runners did not start.')
        time.sleep(0.01)


def trial(implementation, size, seconds, directory):
    """Run `size` runners for `seconds`; return their ticks and commits."""
    from gocept.runner.testing import ZEOServer

    python = venvs.python(implementation)
    os.makedirs(directory)
    with open(os.path.join(directory, 'site.zcml'), 'w') as f:
        f.write(SITE_ZCML)
    server = ZEOServer(directory)
    server.start()
    try:
        names = [f'runner-{i}' for i in range(size)]
        subprocess.run(
            [python, WORKER, 'setup', zope_conf(directory, server, 'setup')]
            + names, check=True)
        processes = [
            subprocess.Popen([python, WORKER, 'count',
                              zope_conf(directory, server, name), name,
                              directory])
            for name in names]
        try:
            wait_for([os.path.join(directory, f'ready-{name}')
                      for name in names], processes)
            with open(os.path.join(directory, 'go.tmp'), 'w') as f:
                f.write(repr(time.time() + seconds))
            os.rename(os.path.join(directory, 'go.tmp'),
                      os.path.join(directory, 'go'))
            for process in processes:
                if process.wait(seconds + 300) != 0:
                    raise RuntimeError(f'{process.args} exited with'
                                       f' {process.returncode}')
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    finally:
        server.stop()
    reports = []
    for name in names:
        with open(os.path.join(directory, f'{name}.json')) as f:
            reports.append(json.load(f))
    ticks = sum(r['ticks'] for r in reports)
    commits = sum(r['commits'] for r in reports)
    shared = stored_total(server.path)
    if shared != commits:
        raise RuntimeError(f'Lost updates: the shared counter is {shared},'
                           f' the runners committed {commits}')
    return {'implementation': implementation, 'processes': size,
            'seconds': seconds, 'ticks': ticks, 'commits': commits,
            'wasted': ticks - commits}


def stored_total(path):
    import ZODB
    import ZODB.FileStorage
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path, read_only=True))
    try:
        with db.transaction() as conn:
            return conn.root()['shared']['value']
    finally:
        db.close()


def report(results, args, load_before, load_after, elapsed):
    lines = [
        'Runners sharing one ZEO server; every tick increments one shared',
        'plain-int counter, so concurrent ticks conflict.',
        f'commits/s: median of {args.rounds} round(s) of {args.seconds:g} s'
        ' (each round in brackets).',
        'wasted: worker calls whose commit conflicted, in % of all calls.',
        '3.0 and this ran alternating, each on a fresh ZEO server.',
        '',
        f'Date: {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())};'
        f' Python {platform.python_version()}; {os.cpu_count()} CPUs;',
        f'load average before {load_before:.1f}, after {load_after:.1f};'
        f' the run took {elapsed:.0f} s.',
        '',
        f'{"processes":>9}  {"version":<7}  {"commits/s":>9}'
        f'  {"wasted":>7}  rounds (commits/s)',
    ]
    for size in args.processes:
        for implementation in IMPLEMENTATIONS:
            runs = [r for r in results
                    if r['processes'] == size
                    and r['implementation'] == implementation]
            rates = [r['commits'] / r['seconds'] for r in runs]
            ticks = sum(r['ticks'] for r in runs)
            wasted = sum(r['wasted'] for r in runs)
            share = 100 * wasted / ticks if ticks else 0
            lines.append(
                f'{size:>9}  {implementation:<7}'
                f'  {statistics.median(rates):>9.0f}  {share:>6.1f}%'
                f'  [{", ".join(f"{rate:.0f}" for rate in rates)}]')
    return '\n'.join(lines) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=5)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--processes', type=int, nargs='+',
                        default=[1, 2, 4, 8])
    args = parser.parse_args()
    work = os.path.join(venvs.WORK, 'zeo')
    shutil.rmtree(work, ignore_errors=True)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    results = []
    for round_ in range(args.rounds):
        for size in args.processes:
            # Alternate which implementation goes first.
            order = IMPLEMENTATIONS[::1 if round_ % 2 == 0 else -1]
            for implementation in order:
                directory = os.path.join(
                    work, f'{implementation}-{size}-{round_}')
                result = trial(implementation, size, args.seconds, directory)
                shutil.rmtree(directory)
                print(json.dumps(result), file=sys.stderr)
                results.append(result)
    text = report(results, args, load_before, os.getloadavg()[0],
                  time.monotonic() - started)
    with open(RESULTS, 'w') as f:
        f.write(text)
    print(text)


if __name__ == '__main__':
    this = venvs.python('this')
    if sys.prefix != os.path.dirname(os.path.dirname(this)):
        os.execv(this, [this] + sys.argv)
    main()
