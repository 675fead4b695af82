"""The virtualenvs the benchmarks compare, made on first use.

``benchmarks/work/venv-3.0`` holds the released gocept.runner 3.0 from the
package index, ``benchmarks/work/venv-this`` this checkout (installed
editable), both with ZEO and RelStorage, and ``benchmarks/work/venv-full``
this checkout with zope.app.zcmlfiles and zope.securitypolicy (for
host.py), ``venv-procrastinate``, ``venv-rq`` and ``venv-dramatiq`` the
job queues that benchmarks/jobs.py compares with gocept.runner.jobs, all
made with the Python that runs the benchmark.  A virtualenv
is made again when what it should hold changed (another setup.py, say).
Delete ``benchmarks/work`` to start afresh.
"""

import hashlib
import os
import shutil
import subprocess
import sys


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, 'work')

REQUIREMENTS = {
    # 3.0 with what the lean site ZCML of the benchmarks needs, and the
    # storages of benchmarks/scale.py.
    '3.0': ['gocept.runner==3.0', 'zope.principalregistry', 'ZEO',
            'RelStorage', 'psycopg2-binary'],
    'this': ['-e', f'{ROOT}[benchmarks,zeo,relstorage]'],
    # This checkout with what the full zope.app site of gocept.runner 3.0's
    # tests needs (benchmarks/host.py).
    'full': ['-e', f'{ROOT}', 'zope.app.zcmlfiles', 'zope.securitypolicy'],
    # The peers of gocept.runner.jobs in benchmarks/jobs.py, each with the
    # client of its server.
    'procrastinate': ['procrastinate'],
    'rq': ['rq'],
    'dramatiq': ['dramatiq[redis]'],
}


def python(name):
    """The Python of the virtualenv `name` (a key of REQUIREMENTS), made if
    new."""
    venv = os.path.join(WORK, f'venv-{name}')
    executable = os.path.join(venv, 'bin', 'python')
    stamp_path = os.path.join(venv, 'bench-stamp')
    with open(os.path.join(ROOT, 'setup.py')) as f:
        stamp = hashlib.sha256(
            (sys.version + repr(REQUIREMENTS[name]) + f.read()).encode()
        ).hexdigest()
    if os.path.exists(stamp_path):
        with open(stamp_path) as f:
            if f.read() == stamp:
                return executable
    print(f'Creating the virtualenv {venv}', file=sys.stderr, flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, '-m', 'venv', venv], check=True)
    subprocess.run(
        [executable, '-m', 'pip', 'install', '--quiet']
        + REQUIREMENTS[name], check=True)
    with open(stamp_path, 'w') as f:
        f.write(stamp)
    return executable
