"""The parsers the command line reference is generated from."""

import gocept.runner.example
import gocept.runner.programs


def runexample():
    """The parser of ``runexample``, a decorated worker as a program."""
    worker = gocept.runner.example.count
    return gocept.runner.programs.program_parser(
        worker.decorator, worker.__wrapped__, prog='runexample')
