"""``python -m gocept.runner``: the gocept-runner command."""

from gocept.runner.cli import script


script(prog='python -m gocept.runner')
