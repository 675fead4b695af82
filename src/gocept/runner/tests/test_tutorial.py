"""The tutorial, docs/tutorial.rst, followed as a reader follows it.

A temporary directory is the reader's home.  Every command of the page's
console blocks runs there, in order, in one shell, and prints what the page
shows: the first of them install gocept.runner from a copy of this checkout
into a fresh virtualenv (no system site packages), with pip, from the
package index.  That takes a minute or so; it is done once, in one test.
"""

import fnmatch
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import unittest

import zc.lockfile

from gocept.runner import testing
from gocept.runner.tests import console
from gocept.runner.tests.test_deployment import CHECKOUT
from gocept.runner.tests.test_deployment import HERE
from gocept.runner.tests.test_deployment import README


TUTORIAL = os.path.join(CHECKOUT, 'docs', 'tutorial.rst')
INDEX = os.path.join(CHECKOUT, 'docs', 'index.rst')
# The project's files, which the page includes.
PROJECT = os.path.join(CHECKOUT, 'docs', 'tutorial', 'myproject')

# The reader clones the repository; the test copies this checkout instead.
CLONE = 'git clone https://github.com/gocept/gocept.runner.git'
# What the first install command of README.rst, docs/index.rst and the
# tutorial may be: pip, of the virtualenv or not, and the clone.
INSTALL = re.compile(r'^(\.venv/bin/)?pip install (\.|\.\.)/gocept\.runner$')
CRONTAB = re.compile(r'^\s*\*/5 \* \* \* \* (.*)$', re.MULTILINE)
# How the page tries the crontab line's command as cron runs it.
AS_CRON = 'env -i HOME="$HOME" PATH=/usr/bin:/bin /bin/sh -c '
# The environment of the test that is not the reader's: the test's own
# virtualenv or buildout, and a zope.conf named for the test run.
NOT_THE_READERS = {'PYTHONPATH', 'PYTHONHOME', 'PYTHONSTARTUP', 'VIRTUAL_ENV',
                   '__PYVENV_LAUNCHER__', 'GOCEPT_RUNNER_CONFIG'}


def page():
    with open(TUTORIAL) as f:
        return f.read()


def first_install_command(path):
    """The first ``pip install`` command in the reST file `path`."""
    with open(path) as f:
        for line in f:
            for match in re.finditer(r'(?:\S*/)?pip install [^`\s]+', line):
                return match.group()
    raise AssertionError(f'{path} has no pip install command')


def install_commands():
    """``(file, argument)`` for every ``pip install`` of gocept.runner in
    README.rst and the documentation, lines joined."""
    paths = [README] + glob.glob(os.path.join(CHECKOUT, 'docs', '**', '*.rst'),
                                 recursive=True)
    paths += glob.glob(os.path.join(HERE, '*.rst'))
    found = []
    for path in paths:
        if os.sep + '_build' + os.sep in path:
            continue
        with open(path) as f:
            text = ' '.join(f.read().split())
        for argument in re.findall(
                r'pip install (\'[^\']*\'|"[^"]*"|[^\s`]+)', text):
            argument = argument.strip('\'"')
            if 'gocept.runner' in argument:
                found.append((os.path.relpath(path, CHECKOUT), argument))
    return found


def ignored_by_git(root):
    """A function for shutil.copytree's `ignore` that leaves out what the
    .gitignore of `root` names (what virtualenvs, tox, buildout and builds
    put into a checkout), and .git."""
    patterns = []
    path = os.path.join(root, '.gitignore')
    if os.path.exists(path):
        with open(path) as f:
            patterns = [line.strip() for line in f
                        if line.strip() and not line.startswith('#')]

    def ignore(directory, names):
        relative = os.path.relpath(directory, root)
        relative = '' if relative == '.' else relative + '/'
        ignored = {'.git'}
        for name in names:
            for pattern in patterns:
                pattern = pattern.rstrip('/')
                if pattern.startswith('/'):
                    if fnmatch.fnmatch(relative + name, pattern[1:]):
                        ignored.add(name)
                elif fnmatch.fnmatch(name, pattern):
                    ignored.add(name)
        return ignored
    return ignore


class TutorialPageTest(unittest.TestCase):
    """What the tutorial shows is what TutorialTest runs."""

    def setUp(self):
        if not os.path.exists(TUTORIAL):
            self.skipTest('docs/ is not beside the package (no checkout)')

    def test_the_first_install_commands_install_from_the_clone(self):
        # The README's, the front page's and the tutorial's: from a clone
        # of the repository, which works before 4.0 is on the package
        # index.
        for path in (README, INDEX, TUTORIAL):
            self.assertRegex(first_install_command(path), INSTALL, path)
        self.assertEqual(
            '.venv/bin/pip install ../gocept.runner',
            first_install_command(TUTORIAL))

    def test_no_install_command_fetches_3_0(self):
        # Today pip finds 3.0 on the package index, without the extras of
        # 4.0; or nothing, given ``>= 4.0``: that is for after the release.
        commands = install_commands()
        self.assertIn(('README.rst', './gocept.runner'), commands)
        for path, argument in commands:
            self.assertRegex(
                argument, r'^(\.\.?/gocept\.runner(\[\w+\])?'
                r'|gocept\.runner(\[\w+\])? >= 4\.0)$', path)

    def test_every_file_of_the_project_is_on_the_page(self):
        text = page()
        shown = set(re.findall(
            r'^\.\. literalinclude:: tutorial/myproject/(\S+)$', text,
            re.MULTILINE))
        files = {os.path.relpath(os.path.join(directory, name), PROJECT)
                 for directory, _, names in os.walk(PROJECT)
                 for name in names}
        self.assertEqual({'mypkg/__init__.py'}, files - shown)
        self.assertEqual(set(), shown - files)
        self.assertIn('empty ``mypkg/__init__.py``', text)

    def test_the_crontab_line_is_the_command_tried(self):
        line, = CRONTAB.findall(page())
        tried = [step.command for step in console.steps(TUTORIAL)
                 if step.command.startswith(AS_CRON)]
        self.assertEqual(shlex.quote(line), tried[0][len(AS_CRON):])


class MistakeFromPythonTest(unittest.TestCase):
    """Called from Python, a mistake in zope.conf is one exception: one
    traceback, whose last line is the page's, nothing chained to it."""

    layer = testing.DocsLayer

    def test_the_traceback_is_one_exception(self):
        if not os.path.exists(TUTORIAL):
            self.skipTest('docs/ is not beside the package (no checkout)')
        step, = [step for step in console.steps(TUTORIAL)
                 if step.command.startswith('.venv/bin/python -c')
                 and 'no-log.conf' in step.command]
        with tempfile.TemporaryDirectory() as directory:
            shutil.copytree(PROJECT, directory, dirs_exist_ok=True)
            os.mkdir(os.path.join(directory, 'var'))
            # The Python of the tests, which has gocept.runner.
            command = shlex.split(step.command)
            command[0] = sys.executable
            env = dict(os.environ)
            env.pop('GOCEPT_RUNNER_CONFIG', None)
            result = subprocess.run(command, cwd=directory, env=env,
                                    capture_output=True, text=True,
                                    timeout=120)
        self.assertEqual(1, result.returncode, result.stderr)
        self.assertEqual('', result.stdout)
        self.assertEqual(step.expected.splitlines()[-1],
                         result.stderr.splitlines()[-1])
        self.assertEqual(
            1, result.stderr.count('Traceback (most recent call last)'),
            result.stderr)
        self.assertNotIn('The above exception', result.stderr)
        self.assertNotIn('During handling', result.stderr)
        self.assertIn('It is the only exception in the traceback', page())


class TutorialTest(unittest.TestCase):
    layer = testing.DocsLayer

    def setUp(self):
        if not os.path.exists(TUTORIAL):
            self.skipTest('docs/ is not beside the package (no checkout)')
        self.home = tempfile.mkdtemp(prefix='gocept.runner.tutorial.')
        self.addCleanup(shutil.rmtree, self.home)
        self.project = os.path.join(self.home, 'myproject')
        # `python3` is the Python of the tests (a version gocept.runner
        # supports), not whichever the PATH has.
        bin = tempfile.mkdtemp(prefix='gocept.runner.bin.')
        self.addCleanup(shutil.rmtree, bin)
        with open(os.path.join(bin, 'python3'), 'w') as f:
            f.write(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
        os.chmod(os.path.join(bin, 'python3'), 0o755)
        env = {key: value for key, value in os.environ.items()
               if key not in NOT_THE_READERS}
        # pip keeps its configuration and cache where it had them.
        env.setdefault('XDG_CONFIG_HOME', os.path.expanduser('~/.config'))
        env.setdefault('XDG_CACHE_HOME', os.path.expanduser('~/.cache'))
        env.update(HOME=self.home, PATH=bin + os.pathsep + env['PATH'],
                   COLUMNS='80', NO_COLOR='1',
                   PIP_DISABLE_PIP_VERSION_CHECK='1')
        self.shell = console.Shell(self.home, env)
        self.addCleanup(self.shell.close)

    def test_the_tutorial(self):
        steps = console.steps(TUTORIAL)
        self.assertEqual(CLONE, steps[0].command)
        for step, following in zip(steps, steps[1:] + [None]):
            if step.command == CLONE:
                shutil.copytree(CHECKOUT,
                                os.path.join(self.home, 'gocept.runner'),
                                ignore=ignored_by_git(CHECKOUT),
                                symlinks=True)
                continue
            status = self.shell.check(self, step, timeout=600)
            if following is None or following.command != 'echo $?':
                self.assertEqual(0, status, step)
            if step.command == 'mkdir myproject':
                # The files the page shows, as the reader writes them.
                shutil.copytree(PROJECT, self.project, dirs_exist_ok=True)
            if INSTALL.match(step.command):
                self.assertFreshVirtualenv()
        self.assertLockedOut()

    def assertFreshVirtualenv(self):
        """The virtualenv sees no site packages but its own, and has
        gocept.runner from the clone, not as an editable install."""
        venv = os.path.join(self.project, '.venv')
        with open(os.path.join(venv, 'pyvenv.cfg')) as f:
            self.assertIn('include-system-site-packages = false', f.read())
        output, status = self.shell.run(
            '.venv/bin/python -c "import gocept.runner, os;'
            ' print(os.path.realpath(gocept.runner.__file__))"')
        self.assertEqual(0, status, output)
        self.assertTrue(output.startswith(os.path.realpath(venv) + os.sep),
                        output)
        output, status = self.shell.run('.venv/bin/gocept-runner --version')
        self.assertEqual(0, status, output)
        self.assertTrue(output.startswith('gocept-runner (gocept.runner 4.'),
                        output)

    def assertLockedOut(self):
        """While a run holds the lock file, cron's next run ends at once with
        the line the page shows, and exit status 75."""
        text = page()
        expected = re.search(
            r'^\s*(mypkg-report: Another run holds .*)$', text,
            re.MULTILINE).group(1)
        line, = CRONTAB.findall(text)
        lock = zc.lockfile.LockFile(
            os.path.join(self.project, 'var', 'report.lock'))
        try:
            output, status = self.shell.run(AS_CRON + shlex.quote(line))
        finally:
            lock.close()
        self.assertEqual(
            (75, expected.replace('4242', str(os.getpid())) + '\n'),
            (status, output))
