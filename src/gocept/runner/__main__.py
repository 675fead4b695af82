"""``python -m gocept.runner``: the gocept-runner command."""

import sys

from gocept.runner.cli import main


sys.exit(main(prog='python -m gocept.runner'))
