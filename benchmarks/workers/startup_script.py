"""Start-up through the console-script machinery: the ``once`` job of
startup.py called with no arguments, as a console_scripts wrapper calls it,
so that it parses its command line (-C, --lock-file) and takes the lock.
"""

import gocept.runner

import benchlib


@gocept.runner.once()
def worker():
    benchlib.report(first_tick=benchlib.now())
    benchlib.db_root()['bench']['n'] += 1


worker()
