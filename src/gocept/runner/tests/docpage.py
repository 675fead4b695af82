"""The pages of docs/ that are doctests, and their hidden set-up.

A page shows what its reader needs: files as listings (a ``.. code-block::``
with a ``:caption:``), commands as console blocks, Python as ``>>>``
examples.  What only the test needs is in comments (``..`` followed by
indented ``>>>`` lines), which doctest runs and Sphinx does not show.  Such
a comment may call:

``write(caption, path=None)``
    write the listing of that caption into the working directory, as the
    file the caption names (or `path`); return its path.
``listing(caption)``
    the text of that listing.
``console()``
    run the page's next console block in the page's shell, and print where
    a command's output differs from the page, or where it failed without
    an ``echo $?`` after it that shows its exit status.
``page.at_end(function)``
    call `function` when the page ends, whether it passed or not (to stop a
    server that the page's set-up started, say).
``page.replace(old, new)``
    from now on, write `new` for `old` into files, commands and the output
    that commands are to print (a server's port that the test chose, a
    job's id, say).
``install_scripts(caption)``
    write the console scripts that the ``setup.py`` of that caption
    declares into ``bin/``, as pip writes them when it installs the
    package (which the shell finds in the working directory).
``directory``
    the working directory of the page's examples, a temporary directory,
    both of the doctest and of the shell.

When the page ends, every console block must have run and every listing
with a caption must have been written or read: what the page shows is what
the test ran.  ``gocept.runner.testing.write_zope_conf(directory)`` writes
the zope.conf most pages use.
"""

import doctest
import os
import re
import shutil
import sys
import tempfile

from gocept.runner.tests import console
from gocept.runner.tests.test_cli import WRAPPER
from gocept.runner.tests.test_deployment import CHECKOUT


DOCS = os.path.join(CHECKOUT, 'docs')
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def environment(directory):
    """The environment of a page's shell in `directory`: the console
    scripts of the Python that runs the tests come first on the PATH, the
    packages of the page are found in `directory` as if they were
    installed, and no zope.conf is named by the environment."""
    env = dict(os.environ)
    env.pop('GOCEPT_RUNNER_CONFIG', None)
    env['PATH'] = os.pathsep.join(
        [os.path.dirname(sys.executable), env.get('PATH', '')])
    env['PYTHONPATH'] = os.pathsep.join(
        [directory] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    env.update(COLUMNS='80', LC_ALL='C')
    return env


class Page:
    """The listings and console blocks of the reST file `path`, run in the
    directory `directory`."""

    def __init__(self, path, directory):
        self.path = path
        self.directory = directory
        blocks = console.code_blocks(path)
        self.listings = {block.options['caption']: block for block in blocks
                         if 'caption' in block.options
                         and block.language != 'console'}
        self.sessions = [console.session(block) for block in blocks
                         if block.language == 'console']
        self.used = set()
        self.replacements = []
        self.shell = None
        self.cleanups = []

    def at_end(self, function):
        self.cleanups.append(function)

    def replace(self, old, new):
        self.replacements.append((old, new))

    def _replaced(self, text):
        for old, new in self.replacements:
            text = text.replace(old, new)
        return text

    def listing(self, caption):
        self.used.add(caption)
        return self._replaced(self.listings[caption].text)

    def write(self, caption, path=None):
        path = os.path.join(self.directory, path or caption)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(self.listing(caption))
        return path

    def install_scripts(self, caption):
        os.makedirs(os.path.join(self.directory, 'bin'), exist_ok=True)
        for name, module, function in re.findall(
                r"'([\w-]+) = ([\w.]+):(\w+)'", self.listing(caption)):
            path = os.path.join(self.directory, 'bin', name)
            with open(path, 'w') as f:
                f.write(WRAPPER.format(
                    python=sys.executable, module=module, name=function))
            os.chmod(path, 0o755)

    def console(self, timeout=300):
        if self.shell is None:
            self.shell = console.Shell(self.directory,
                                       environment(self.directory))
        steps = self.sessions.pop(0)
        checker = doctest.OutputChecker()
        for step, following in zip(steps, steps[1:] + [None]):
            output, status = self.shell.run(
                self._replaced(step.command), timeout)
            expected = self._replaced(step.expected)
            if not checker.check_output(expected, output, FLAGS):
                print(f'line {step.line}: $ {step.command}')
                print(checker.output_difference(
                    doctest.Example(step.command, expected), output,
                    FLAGS))
            elif status and (following is None
                             or following.command != 'echo $?'):
                print(f'line {step.line}: $ {step.command}')
                print(f'exited with status {status}:\n{output}')

    def close(self):
        for function in reversed(self.cleanups):
            function()
        if self.shell is not None:
            self.shell.close()
        unused = set(self.listings) - self.used
        if self.sessions or unused:
            raise AssertionError(
                f'{self.path}: the test did not run the console blocks at'
                f' the lines {[steps[0].line for steps in self.sessions]}'
                f' nor write or read the listings {sorted(unused)}')


def setUp(test):
    directory = tempfile.mkdtemp(prefix='gocept.runner.doc.')
    page = Page(test.filename, directory)
    test.globs.update(
        page=page, directory=directory, write=page.write,
        listing=page.listing, console=page.console,
        install_scripts=page.install_scripts,
        _cwd=os.getcwd())
    os.chdir(directory)


def tearDown(test):
    globs = test.globs
    os.chdir(globs['_cwd'])
    try:
        globs['page'].close()
    finally:
        shutil.rmtree(globs['directory'])


def DocPageSuite(*paths, **kw):
    """A doctest suite of the pages `paths` of docs/ (relative to docs/),
    each run with the set-up above."""
    return doctest.DocFileSuite(
        *[os.path.join(DOCS, path) for path in paths],
        module_relative=False, setUp=setUp, tearDown=tearDown,
        optionflags=FLAGS, **kw)
