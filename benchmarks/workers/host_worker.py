"""Workers in one host, or one worker as a single runner.

Arguments: zope.conf, MODE, N, KIND, COUNT.

- MODE ``prepare``: make the template database (as prepare.py does, with a
  counter of its own for each of N workers); KIND and COUNT are ignored.
- MODE ``host``: run the workers w0 ... wN-1 in one gocept.runner.host.Host.
- MODE ``single``: run the worker wN alone, as appmain does.

KIND is ``empty`` (a tick that does nothing), ``writing`` (a tick adds one
to the worker's own counter) or ``io`` (a tick waits 10 ms, as on I/O, and
writes nothing); a worker stops after COUNT ticks, at ``ticks=0``.  Each
worker reports, as a JSON line, the moment its first tick has committed
(the start of its second) with the process's RSS then, and after its last
tick the moments of its first and last tick and the RSS.  At the end
the process reports its peak RSS and what the counters in its database
hold.
"""

import sys
import threading
import time

import gocept.runner

import benchlib


IO_WAIT = 0.01
_reporting = threading.Lock()


def report(**values):
    # Workers of a host report from their threads: one line at a time.
    with _reporting:
        benchlib.report(**values)


def make_worker(name, kind, count):
    """The worker `name`: an appmain with ticks=0 of `count` ticks."""
    done = 0
    start = counter = None

    def worker():
        nonlocal done, start, counter
        done += 1
        if done == 1:
            start = benchlib.now()
            counter = benchlib.db_root()['counters'][name]
        elif done == 2:
            report(worker=name, committed=benchlib.now(),
                   rss=benchlib.rss_kb())
        if kind == 'writing':
            counter['n'] += 1
        elif kind == 'io':
            time.sleep(IO_WAIT)
        if done == count:
            end = benchlib.now()
            report(worker=name, ticks=done - 1, start=start, end=end,
                   seconds=end - start, rss_end=benchlib.rss_kb())
            return gocept.runner.Exit

    worker.__qualname__ = worker.__name__ = name
    return gocept.runner.appmain(ticks=0)(worker)


def prepare(zope_conf, n):
    import transaction
    from persistent.mapping import PersistentMapping
    db = benchlib.open_floor(zope_conf)
    connection = db.open()
    root = connection.root()
    assert 'Application' in root
    root['counters'] = PersistentMapping(
        {f'w{i}': PersistentMapping(n=0) for i in range(n)})
    transaction.commit()
    connection.close()
    db.close()


def counts():
    """The counters in ./Data.fs (the runner has closed it)."""
    import ZODB
    import ZODB.FileStorage
    storage = ZODB.FileStorage.FileStorage('Data.fs', read_only=True)
    db = ZODB.DB(storage)
    try:
        counters = db.open().root()['counters']
        return {name: counter['n'] for name, counter in counters.items()}
    finally:
        db.close()


def main(zope_conf, mode, n, kind, count):
    if mode == 'prepare':
        prepare(zope_conf, n)
    elif mode == 'host':
        from gocept.runner.host import Host
        host = Host([make_worker(f'w{i}', kind, count) for i in range(n)])
        host.run(zope_conf)
        stopped = [w.loop.stopped_because for w in host.workers]
        if stopped != ['Exit'] * n:
            sys.exit(f'The workers stopped as {stopped}')
    else:
        make_worker(f'w{n}', kind, count)(None, zope_conf)
    report(rss_peak=benchlib.rss_kb('VmHWM'), counts=counts())


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4],
         int(sys.argv[5]))
