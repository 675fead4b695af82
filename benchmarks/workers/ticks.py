"""Empty ticks: ``ticks=0``, a worker that does nothing, COUNT ticks.

Arguments: zope.conf, COUNT, and optionally the principal to run as.
"""

import sys

import gocept.runner

import benchlib


zope_conf, count = sys.argv[1], int(sys.argv[2])
principal = sys.argv[3] if len(sys.argv) > 3 else None
done = 0
start = None


@gocept.runner.appmain(ticks=0, principal=principal)
def worker():
    global done, start
    done += 1
    if done == 1:
        start = benchlib.now()
    if done == count:
        seconds = benchlib.now() - start
        seen = benchlib.interaction_principal() if principal else None
        request = benchlib.participation_is_request() if principal else None
        benchlib.report(ticks=done - 1, seconds=seconds, principal=seen,
                        request=request)
        return gocept.runner.Exit


worker(None, zope_conf)
benchlib.report(done=done)
