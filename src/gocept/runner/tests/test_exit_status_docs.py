"""The exit statuses the documents state are those of the one table,
gocept.runner.status.STATUSES.

``--help`` says them from the table (its epilog, status.describe()), and
the reference page's table is made from it (docs/exitstatuses.py, a Sphinx
extension): here, the page describes exactly the table's statuses, and
every "exits with status N" of the tutorial, the how-tos, the explanations
and the reference is a status of the table, with words near it that say
why a program ends with that status.
"""

import glob
import os
import re
import unittest

from gocept.runner.status import EX_FAILURE
from gocept.runner.status import EX_INTERRUPTED
from gocept.runner.status import EX_OK
from gocept.runner.status import EX_TEMPFAIL
from gocept.runner.status import EX_USAGE
from gocept.runner.status import STATUSES
from gocept.runner.tests.test_deployment import CHECKOUT


DOCS = os.path.join(CHECKOUT, 'docs')
REFERENCE = os.path.join(DOCS, 'reference', 'exit-status.rst')

# A statement of an exit status: "exits with status 75", "exit status 2",
# "is status 1", "exits 1"; and the further ones of a list in the same
# sentence: "status 0 when ..., 1 when ...".
STATEMENT = re.compile(
    r'\b(?:exit status(?:es)?:?|status|exits?(?: with(?: status)?)?)'
    r'(?: is)? (\d+)\b', re.IGNORECASE)
FURTHER = re.compile(r'(?:,| and) (\d+) when\b')

# How many words either side of a statement say why a program ends with
# that status.
WORDS = 10

# The words by which a sentence says why a program ends with a status:
# those of the status's meaning in STATUSES, and their synonyms in the
# documents.
CAUSES = {
    EX_OK: r'done|commit|SIGTERM|SIGHUP|signal 15|stop|succe|did\b|checked',
    EX_FAILURE: r'fail|down|running\?|disk|tries again',
    EX_USAGE: r'mistake|usage|error|configuration|not exist|refuse',
    EX_TEMPFAIL: r'lock|limit|max_|EX_TEMPFAIL|restart|start it again'
                 r'|starts? a fresh',
    EX_INTERRUPTED: r'SIGINT|Ctrl-C',
}

# Statements of other programs' statuses.
OTHERS = [
    '``status`` exits with 0',  # zdaemon's status command
    '``pid ...: exit status 0``',  # a line of zdaemon's log
]


def documents():
    """The pages of the documentation: docs/ and the package's pages that
    it includes (the changelog aside: it tells of old statuses, too)."""
    paths = glob.glob(os.path.join(DOCS, '**', '*.rst'), recursive=True)
    paths += glob.glob(os.path.join(CHECKOUT, 'src', 'gocept', 'runner',
                                    '*.rst'))
    return sorted(path for path in paths
                  if '_build' not in path and
                  os.path.basename(path) != 'changes.rst')


def statements(text):
    """The statements of exit statuses in `text`: (status, context), the
    context being the words of its sentence around it (WORDS either side).
    """
    text = ' '.join(text.split())
    for other in OTHERS:
        text = text.replace(other, '')
    for sentence in re.split(r'(?<=[.?!])\s+', text):
        for match in STATEMENT.finditer(sentence):
            found = [(match.group(1), match.start(), match.end())]
            found += [(further.group(1), further.start(1), further.end(1))
                      for further in FURTHER.finditer(sentence, match.end())]
            for status, start, end in found:
                context = (sentence[:start].split()[-WORDS:] + [status] +
                           sentence[end:].split()[:WORDS])
                yield int(status), ' '.join(context)


def caused(status, context):
    """Whether `context` says why a program ends with `status`."""
    return status in CAUSES and re.search(
        CAUSES[status], context, re.IGNORECASE) is not None


class ExitStatusDocsTest(unittest.TestCase):

    def setUp(self):
        if not os.path.isdir(DOCS):
            self.skipTest('docs/ is not beside the package (no checkout)')

    def test_the_reference_describes_exactly_the_statuses_of_the_table(self):
        with open(REFERENCE) as f:
            page = f.read()
        directive = re.search(
            r'^\.\. exit-statuses::\n((?:\n|   .*\n)*)', page, re.MULTILINE)
        self.assertIsNotNone(directive, 'no exit-statuses directive')
        described = re.findall(r'^   :([^:\s]+):', directive.group(1),
                               re.MULTILINE)
        self.assertEqual(
            ['n' if status is None else str(status)
             for status, _ in STATUSES], described)

    def test_the_bad_input_table_gives_statuses_of_the_table(self):
        with open(REFERENCE) as f:
            page = f.read()
        bad_input = page[page.index('\nBad input\n'):]
        rows = re.findall(r'^\S.* (\d+)$', bad_input, re.MULTILINE)
        self.assertGreater(len(rows), 30)
        for status in rows:
            self.assertIn(int(status), CAUSES)

    def test_the_documents_state_statuses_of_the_table(self):
        self.assertEqual({status for status, _ in STATUSES} - {None},
                         set(CAUSES))
        found = 0
        for path in documents():
            with open(path) as f:
                text = f.read()
            name = os.path.relpath(path, CHECKOUT)
            for status, context in statements(text):
                found += 1
                with self.subTest(document=name, status=status):
                    self.assertIn(status, CAUSES, context)
                    self.assertTrue(caused(status, context), context)
        self.assertGreater(found, 40)

    def test_a_wrong_status_is_found(self):
        for text in [
                'While a run holds the lock, the next exits with status 2.',
                'It exits with status 3 when it is done.',
                'It exits with status 0 when it is done, 1 when the'
                ' lock is held.']:
            with self.subTest(text=text):
                self.assertFalse(all(
                    caused(status, context)
                    for status, context in statements(text)))
