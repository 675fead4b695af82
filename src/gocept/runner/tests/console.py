"""Run the shell sessions of the documentation as they are written there.

A page shows a session as a ``.. code-block:: console``: lines starting
with ``$ `` are commands, the lines after each command what it prints
(stdout and stderr together).  `sessions` reads them from a page; a
`Shell` runs them one after another in a single ``/bin/sh``, as a reader
types them into a terminal (``cd`` and ``echo $?`` mean what they say), and
`Shell.check` compares what each command printed with the page, where
``...`` stands for any text (doctest's ELLIPSIS).
"""

import doctest
import os
import re
import select
import subprocess
import time
import uuid


DIRECTIVE = re.compile(r'^(\s*)\.\. code-block::\s*(\S*)\s*$')
OPTION = re.compile(r'^\s*:([\w-]+):\s*(.*)$')
PROMPT = '$ '


class Step:
    """A command of a page and the output the page shows for it."""

    def __init__(self, command, expected, line):
        self.command = command
        self.expected = expected
        self.line = line

    def __repr__(self):
        return f'<Step line {self.line}: $ {self.command}>'


class Block:
    """A ``.. code-block::`` of a page: its `language`, its `options`
    (``caption`` and the like), the number of its first `line` and its
    `lines`, dedented."""

    def __init__(self, language, options, line, lines):
        self.language = language
        self.options = options
        self.line = line
        self.lines = lines

    @property
    def text(self):
        return ''.join(line + '\n' for line in self.lines)


def code_blocks(path):
    """The code blocks of the reST file `path`, as Blocks."""
    with open(path) as f:
        lines = f.read().splitlines()
    found = []
    index = 0
    while index < len(lines):
        match = DIRECTIVE.match(lines[index])
        index += 1
        if match is None:
            continue
        indent = len(match.group(1))
        options = {}
        while index < len(lines) and OPTION.match(lines[index]):
            name, value = OPTION.match(lines[index]).groups()
            options[name] = value
            index += 1
        start = index
        while index < len(lines) and (
                not lines[index].strip()
                or len(lines[index]) - len(lines[index].lstrip()) > indent):
            index += 1
        content = lines[start:index]
        while content and not content[0].strip():
            content.pop(0)
            start += 1
        while content and not content[-1].strip():
            content.pop()
        margin = min(len(line) - len(line.lstrip())
                     for line in content if line.strip())
        found.append(Block(match.group(2), options, start + 1,
                           [line[margin:] for line in content]))
    return found


def session(block):
    """The commands of the console `block` (a Block), as Steps."""
    steps = []
    for number, line in enumerate(block.lines, block.line):
        if line.startswith(PROMPT):
            steps.append(Step(line[len(PROMPT):], [], number))
        elif not steps:
            raise ValueError(
                f'line {number}: a console block starts with output, not'
                f' with a command: {line!r}')
        elif steps[-1].command.endswith('\\') and not steps[-1].expected:
            # A command continued on the next line.
            steps[-1].command += '\n' + line
        else:
            steps[-1].expected.append(line)
    for step in steps:
        step.expected = ''.join(line + '\n' for line in step.expected)
    return steps


def sessions(path):
    """The console blocks of the reST file `path`, each a list of Steps."""
    return [session(block) for block in code_blocks(path)
            if block.language == 'console']


def steps(path):
    """Every command of the reST file `path`, in order, as Steps."""
    return [step for session in sessions(path) for step in session]


class Shell:
    """One ``/bin/sh`` in the directory `cwd`, with the environment `env`,
    that runs commands one after the other.

    Each command reads from /dev/null and writes its stdout and stderr
    into one pipe, as into a terminal.
    """

    def __init__(self, cwd, env):
        self.marker = f'-- end of command {uuid.uuid4().hex} --'
        self.process = subprocess.Popen(
            ['/bin/sh'], cwd=cwd, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.buffer = b''
        self.status = 0

    def run(self, command, timeout=300):
        """Run `command`; return what it printed and its exit status."""
        # `(exit N)` gives `$?` the status of the command before, for a
        # command such as ``echo $?``.
        script = (f'(exit {self.status})\n'
                  f'{{ {command}\n}} </dev/null 2>&1\n'
                  f'printf "\\n%s %s\\n" "{self.marker}" "$?"\n')
        self.process.stdin.write(script.encode())
        self.process.stdin.flush()
        end = re.compile(
            rb'\n' + re.escape(self.marker.encode()) + rb' (\d+)\n')
        deadline = time.monotonic() + timeout
        while (match := end.search(self.buffer)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f'{command!r} did not end within {timeout} s; it printed'
                    f' {self.buffer.decode(errors="replace")!r}')
            ready, _, _ = select.select(
                [self.process.stdout], [], [], remaining)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(
                        f'The shell ended while running {command!r}: '
                        f'{self.buffer.decode(errors="replace")!r}')
                self.buffer += chunk
        output = self.buffer[:match.start()].decode(errors='replace')
        self.buffer = self.buffer[match.end():]
        self.status = int(match.group(1))
        if output and not output.endswith('\n'):
            output += '\n'
        return output, self.status

    def check(self, testcase, step, timeout=300):
        """Run the `step` of a page; fail `testcase` unless it printed what
        the page shows.  Return the exit status."""
        output, status = self.run(step.command, timeout)
        checker = doctest.OutputChecker()
        if not checker.check_output(step.expected, output, doctest.ELLIPSIS):
            example = doctest.Example(step.command, step.expected)
            testcase.fail(
                f'line {step.line}: $ {step.command}\n'
                + checker.output_difference(
                    example, output, doctest.ELLIPSIS))
        return status

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)
        self.process.stdout.close()
