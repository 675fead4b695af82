"""Many workers in one process: a process of several main loops.

The imports, the site ZCML and the databases are set up once, for all
workers (see gocept.runner.environment.application).  Each worker then runs
its MainLoop in a thread of its own, with its own database connection, and
so with its own transaction manager, site and security interaction.  What
belongs to the process is the process's (see gocept.runner.process):
signals stop every worker (SIGINT, too, lets each finish its tick: only the
main thread could be interrupted, and it runs none); systemd hears READY=1
once every worker's loop runs, and WATCHDOG=1, like the heartbeat file,
each time that every running worker has ended a tick since the last time;
`max_runtime` and `max_memory` stop every worker (`max_ticks` is a
worker's own); metrics are one server or file for the process, each
worker's figures under its label ``worker``.

A worker whose loop fails is started again after a pause (see
gocept.runner.process); a worker that is done (it returned Exit, raised
SystemExit, ran its one tick) ends its thread; the host ends when every
worker has.
"""

from gocept.runner import assembly
from gocept.runner import environment
from gocept.runner.assembly import Worker
from gocept.runner.process import MAX_RESTART_PAUSE  # noqa: F401 (API)
from gocept.runner.process import RESTART_PAUSE  # noqa: F401 (API)


__all__ = ['Host', 'Worker']


class Host:
    """Runs `workers` (Worker objects, or functions) in one process.

    `max_runtime`, `max_memory` (see gocept.runner.limits) and `heartbeat`
    (see gocept.runner.health) are the process's, and so are `metrics`
    ([HOST:]PORT to serve Prometheus metrics on) and `metrics_file` (a file
    to write them to at the end), which need the metrics extra (see
    gocept.runner.metrics).  After `run`, `stopped_because` is None if
    every worker ended by itself, else 'signal' (`signal` has which) or the
    limit reached; each Worker's `loop` is its MainLoop.
    """

    def __init__(self, workers, **settings):
        self.workers = [w if isinstance(w, Worker) else Worker(w)
                        for w in workers]
        self._run = assembly.Run(self.workers, **settings)
        # The Exporter of the metrics, if there are any.
        self.metrics = self._run.metrics
        self.stopped_because = self.signal = None

    def run(self, zope_conf):
        """Set up `zope_conf` once and run every worker until all have ended
        or the host is stopped; return self."""
        process = self._run(environment.application(zope_conf))
        self.stopped_because = process.stopped_because
        self.signal = process.signal
        return self
