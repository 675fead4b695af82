"""The runners benchmarks/scale.py starts, under gocept.runner 3.0 or this.

    python scale_worker.py setup ZOPE_CONF JOBS IO_JOBS NAME...
    python scale_worker.py run ZOPE_CONF NAME DIRECTORY PHASE...
    python scale_worker.py produce ZOPE_CONF DIRECTORY JOBS

`run` goes through the PHASEs one after the other, each in step with the
other runners: it creates the file ready-PHASE-NAME in DIRECTORY, waits for
go-PHASE (which holds the time to stop at, for the timed phases), and at the
end of the phase writes PHASE-NAME.json there.  The phases:

counter
    every tick increments one shared plain integer (so concurrent ticks
    conflict) and a count of the runner's own, until the time is up;
own
    every tick increments a count of the runner's own only (no conflicts);
queue, io
    every tick takes a job from a gocept.runner.queue.Queue and counts it
    in a record of the runner's own, until the queue is empty; an io job
    first waits 20 ms (time.sleep, as for a slow server);
feed
    as queue, while the `produce` process puts JOBS jobs into the queue,
    one per transaction, until the queue is empty and the producer done;
    a runner that finds nothing to take waits 50 ms.  A feed job is its
    number and the time it was put: the runner reports how long the jobs
    it took had waited.

It uses only what both versions offer: appmain, once, Exit and the site.
gocept.runner 3.0 has no queue; under it, the queue module of this
checkout is used, which needs nothing else of the package.
"""

import json
import os
import sys
import time

import BTrees.LLBTree
import BTrees.OOBTree
import persistent.mapping
import zope.component.hooks

import gocept.runner


try:
    from gocept.runner.queue import Queue
except ImportError:
    gocept.runner.__path__.append(os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        'src', 'gocept', 'runner'))
    from gocept.runner.queue import Queue


QUEUES = ('queue', 'io', 'feed')
IO_SECONDS = 0.02
IDLE_SECONDS = 0.05


def data():
    return zope.component.hooks.getSite()._p_jar.root()


def counts(names):
    return BTrees.OOBTree.OOBTree({
        name: persistent.mapping.PersistentMapping(value=0)
        for name in names})


def setup(zope_conf, jobs, io_jobs, *names):
    @gocept.runner.once()
    def setup():
        root = data()
        root['shared'] = persistent.mapping.PersistentMapping(value=0)
        root['counts'] = counts(names)
        root['own'] = counts(names)
        root['produced'] = persistent.mapping.PersistentMapping(
            value=0, done=False)
        for queue, size in zip(QUEUES, (int(jobs), int(io_jobs), 0)):
            root[queue] = Queue()
            for number in range(size):
                root[queue].put(number)
            root[f'{queue}-done'] = BTrees.OOBTree.OOBTree(
                {name: BTrees.LLBTree.LLBTree() for name in names})
    setup(None, zope_conf)


def write(path, report):
    """Write `report` to `path` as JSON, so that it is there complete or
    not at all."""
    with open(path + '.tmp', 'w') as f:
        json.dump(report, f)
    os.rename(path + '.tmp', path)


def wait_for_go(directory, phase, name):
    """Announce that we are ready for `phase`; return the go file's time."""
    open(os.path.join(directory, f'ready-{phase}-{name}'), 'w').close()
    go = os.path.join(directory, f'go-{phase}')
    while not os.path.exists(go):
        time.sleep(0.005)
    with open(go) as f:
        return float(f.read())


def run(zope_conf, name, directory, *phases):
    state = {'phase': 0, 'end': None, 'calls': 0, 'waits': []}

    def finish(phase, **report):
        report.update(calls=state['calls'], finished=time.time(),
                      waits=state['waits'])
        write(os.path.join(directory, f'{phase}-{name}.json'), report)
        state.update(phase=state['phase'] + 1, end=None, calls=0, waits=[])

    @gocept.runner.appmain(ticks=0)
    def run():
        if state['phase'] == len(phases):
            return gocept.runner.Exit
        phase = phases[state['phase']]
        root = data()
        if state['end'] is None:
            state['end'] = wait_for_go(directory, phase, name)
            return
        if phase in ('counter', 'own'):
            counter = root['counts' if phase == 'counter' else 'own'][name]
            if time.time() >= state['end']:
                finish(phase, commits=counter['value'])
                return
            state['calls'] += 1
            if phase == 'counter':
                root['shared']['value'] += 1
            counter['value'] += 1
            return
        done = root[f'{phase}-done'][name]
        job = root[phase].take()
        if job is None:
            if root[phase] or (
                    phase == 'feed' and not root['produced']['done']):
                # Nothing to do for now: what a worker's `return IDLE` does.
                time.sleep(IDLE_SECONDS)
                return
            finish(phase, commits=sum(done.values()))
            return
        state['calls'] += 1
        if phase == 'feed':
            job, put = job
            state['waits'].append(time.time() - put)
        if phase == 'io':
            time.sleep(IO_SECONDS)
        done[job] = done.get(job, 0) + 1
    run(None, zope_conf)


def produce(zope_conf, directory, jobs):
    state = {'started': False, 'calls': 0}

    @gocept.runner.appmain(ticks=0)
    def produce():
        if not state['started']:
            wait_for_go(directory, 'feed', 'producer')
            state['started'] = True
            return
        produced = data()['produced']
        if produced['done']:
            write(os.path.join(directory, 'feed-producer.json'),
                  {'calls': state['calls'], 'commits': produced['value'],
                   'finished': time.time()})
            return gocept.runner.Exit
        if produced['value'] == int(jobs):
            produced['done'] = True
            return
        state['calls'] += 1
        data()['feed'].put((produced['value'], time.time()))
        produced['value'] += 1
    produce(None, zope_conf)


if __name__ == '__main__':
    {'setup': setup, 'run': run, 'produce': produce}[sys.argv[1]](
        *sys.argv[2:])
