"""The directive ``exit-statuses``: the reference's table of exit statuses,
made from gocept.runner.status.STATUSES, the table ``--help`` is made
from.

Its content says more of each status, as a field list whose names are the
statuses (``n`` for the worker's own SystemExit code)::

    .. exit-statuses::

       :0: the worker returned ``Exit``, or SIGTERM or SIGHUP stopped the
           program

A status of the table that the content leaves out, or one that the table
does not have, fails the build: the page lists exactly the table's
statuses, each with the words of ``--help``.
"""

import re

from docutils import nodes
from docutils.statemachine import StringList

from sphinx.util.docutils import SphinxDirective

import gocept.runner.status


# A field of the content: ``:NAME: text``.
FIELD = re.compile(r':([^:\s]+):(?:\s+(.*))?$')


def field_name(status):
    """The name of `status` in the directive's content."""
    return 'n' if status is None else str(status)


def constant_names():
    """The names of the constants of gocept.runner.status, by status."""
    return {value: name for name, value in vars(gocept.runner.status).items()
            if name.startswith('EX_')}


def escape(text):
    """`text`, with nothing in it taken for reStructuredText markup."""
    return re.sub(r'([\\`*_|])', r'\\\1', text)


class ExitStatuses(SphinxDirective):
    """The table of exit statuses: status, the words of ``--help``, the
    content's words."""

    has_content = True

    def run(self):
        details = self.details()
        statuses = [field_name(status)
                    for status, _ in gocept.runner.status.STATUSES]
        missing = [name for name in statuses if name not in details]
        unknown = [name for name in details if name not in statuses]
        if missing or unknown:
            raise self.error(
                'exit-statuses: the statuses of'
                ' gocept.runner.status.STATUSES are '
                f'{", ".join(statuses)}; not described: {missing},'
                f' not in the table: {unknown}')
        source, _ = self.get_source_info()
        names = constant_names()
        lines = StringList()

        def add(text, offset=self.content_offset):
            lines.append(text, source, offset)

        add('.. list-table::')
        add('   :header-rows: 1')
        add('   :widths: auto')
        add('')
        add('   * - Status')
        add('     - ``--help`` says')
        add('     - In detail')
        for status, text in gocept.runner.status.STATUSES:
            if status is None:
                add('   * - *n*')
            else:
                add(f'   * - {status} ``{names[status]}``')
            add(f'     - {escape(text)}')
            first = True
            for line, offset in details[field_name(status)]:
                add(('     - ' if first else '       ') + line, offset)
                first = False
        container = nodes.Element()
        self.state.nested_parse(lines, self.content_offset, container)
        return container.children

    def details(self):
        """The content's text of each status: its lines with their offsets.
        """
        details = {}
        lines = None
        for line, (_, offset) in zip(self.content, self.content.items):
            match = FIELD.match(line)
            if match is not None:
                name, text = match.groups()
                if name in details:
                    raise self.error(f'exit-statuses: {name} twice')
                lines = details[name] = []
                line = text or ''
            elif lines is None:
                raise self.error(
                    f'exit-statuses: {line!r} is not in a field :STATUS:')
            if line.strip():
                lines.append((line.strip(), offset))
        return details


def setup(app):
    app.add_directive('exit-statuses', ExitStatuses)
    return {'parallel_read_safe': True, 'parallel_write_safe': True}
