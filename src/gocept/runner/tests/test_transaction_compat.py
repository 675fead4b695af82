"""gocept.runner.transaction, the module of gocept.runner 3.x, and the
`transaction` distribution it is named like."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import transaction

import gocept.runner
import gocept.runner.peritem
from gocept.runner import testing


# Written as 3.x code: the compat module is imported before `transaction`.
SCRIPT_3X = """\
import sys
import gocept.runner.transaction
from gocept.runner.transaction import transaction_per_item
import transaction
import ZODB

print(transaction.__name__, transaction.commit.__module__)
db = ZODB.DB(sys.argv[1])
root = db.open().root()

@transaction_per_item
def steps():
    for number in range(3):
        yield lambda number=number: root.__setitem__(number, number * 2)
    yield lambda: 1 / 0

steps()
transaction.abort()
db.close()
db = ZODB.DB(sys.argv[1])
print(sorted(db.open().root().items()))
"""


class CompatTests(unittest.TestCase):
    layer = testing.SubprocessLayer

    def run_python(self, code, *args, cwd=None):
        return subprocess.run(
            [sys.executable, '-c', code, *args], cwd=cwd,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def test_the_3x_module_has_transaction_per_item(self):
        import gocept.runner.transaction
        self.assertIs(gocept.runner.transaction_per_item,
                      gocept.runner.transaction.transaction_per_item)
        self.assertEqual(['transaction_per_item'],
                         gocept.runner.transaction.__all__)

    def test_transaction_is_still_the_distribution(self):
        import gocept.runner.transaction
        self.assertIs(transaction, sys.modules['transaction'])
        self.assertIs(transaction, gocept.runner.peritem.transaction)
        self.assertIsNot(transaction, gocept.runner.transaction)
        self.assertTrue(callable(transaction.commit))

    def test_3x_code_importing_it_first_commits_to_a_filestorage(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        result = self.run_python(SCRIPT_3X, os.path.join(directory, 'Data.fs'))
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual(
            ['transaction transaction._manager',
             '[(0, 0), (1, 2), (2, 4)]'], result.stdout.splitlines())
        # The failing step was logged (to stderr, Python's last resort).
        self.assertIn('Error in steps.<locals>.<lambda>, transaction aborted',
                      result.stderr)

    def test_with_the_package_directory_on_sys_path_it_says_so(self):
        # A script run from the package's directory has it on sys.path;
        # the module must not pass itself off as the distribution.
        result = self.run_python(
            'import transaction', cwd=os.path.dirname(gocept.runner.__file__))
        self.assertEqual(1, result.returncode)
        last = result.stderr.splitlines()[-1]
        self.assertTrue(last.startswith('ImportError: /'), last)
        self.assertTrue(last.endswith(
            "/gocept/runner/transaction.py was imported as 'transaction':"
            ' do not put the directory of the gocept.runner package on'
            ' sys.path'), last)
