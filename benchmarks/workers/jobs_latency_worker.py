"""The job worker of benchmarks/jobs_latency.py, in a process of its own.

    python jobs_latency_worker.py ZOPE_CONF wakeup|poll

One worker (gocept.runner.tests.jobprograms, whose job functions the
benchmark puts) until SIGTERM.  With ``poll``, the reference: nothing wakes
it, it finds jobs by its poll alone (gocept.runner.jobs.worker.POLL).
"""

import sys

from gocept.runner.jobs import wakeup
from gocept.runner.tests import jobprograms


if __name__ == '__main__':
    zope_conf, mode = sys.argv[1:]
    if mode == 'poll':
        wakeup.Watcher.start = lambda self: None
    jobprograms.main([zope_conf])
