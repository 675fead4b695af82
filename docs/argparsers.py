"""The parsers the command line reference is generated from."""

import gocept.runner.cli
import gocept.runner.example


def runexample():
    """The parser of ``runexample``, a decorated worker as a program."""
    worker = gocept.runner.example.count
    return gocept.runner.cli.program_parser(
        worker.decorator, worker.__wrapped__, prog='runexample')
