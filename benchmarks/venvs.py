"""The virtualenvs the benchmarks compare, made on first use.

``benchmarks/work/venv-3.0`` holds the released gocept.runner 3.0 from the
package index, ``benchmarks/work/venv-this`` this checkout (installed
editable).  Both get ZEO.  Delete ``benchmarks/work`` to start afresh.
"""

import os
import subprocess
import sys


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, 'work')

REQUIREMENTS = {
    '3.0': ['gocept.runner==3.0', 'ZEO'],
    'this': ['-e', f'{ROOT}[zeo]'],
}


def python(name):
    """The Python of the virtualenv `name` ('3.0' or 'this'), made if new."""
    venv = os.path.join(WORK, f'venv-{name}')
    executable = os.path.join(venv, 'bin', 'python')
    done = os.path.join(venv, '.installed')
    if not os.path.exists(done):
        print(f'Setting up {venv} ...', file=sys.stderr)
        subprocess.run([sys.executable, '-m', 'venv', venv], check=True)
        subprocess.run(
            [executable, '-m', 'pip', 'install', '--quiet']
            + REQUIREMENTS[name], check=True)
        open(done, 'w').close()
    return executable
