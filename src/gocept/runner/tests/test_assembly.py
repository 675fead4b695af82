"""Assembling a run: a Worker's settings, the process's settings, the run
of the workers on an application (a FileStorage on disk)."""

import contextlib
import os
import shutil
import tempfile
import unittest

import persistent.mapping
import transaction
import zope.site.folder
import zope.site.site

import gocept.runner
from gocept.runner import assembly
from gocept.runner import lock
from gocept.runner.assembly import Run
from gocept.runner.assembly import Worker
from gocept.runner.config import ConfigurationError
from gocept.runner.environment import UnknownSite
from gocept.runner.health import Heartbeat
from gocept.runner.limits import Limits
from gocept.runner.middleware import Middleware
from gocept.runner.tests.fakeloop import Recorder
from gocept.runner.tests.fakeloop import root


def work():
    pass  # pragma: no cover


@gocept.runner.appmain(ticks=5, max_ticks=3, lock_file='job.lock')
def decorated():
    pass  # pragma: no cover


class WorkerTest(unittest.TestCase):

    def test_a_function(self):
        worker = Worker(work, 'sub', max_runtime=5)
        self.assertEqual({'ticks': 1, 'max_runtime': 5}, worker.settings)
        self.assertIs(work, worker.function)
        self.assertEqual(('work', 'sub', '<Worker work>'),
                         (worker.name, worker.site_name, repr(worker)))

    def test_a_decorated_function_brings_its_settings(self):
        worker = Worker(decorated, ticks=0)
        self.assertEqual(
            {'ticks': 0, 'once': False, 'max_ticks': 3, 'principal': None,
             'lock_file': 'job.lock'}, worker.settings)
        self.assertIs(decorated.__wrapped__, worker.function)
        self.assertEqual('decorated', worker.name)

    def test_a_limit_that_is_not_one_names_the_worker(self):
        with self.assertRaises(ConfigurationError) as raised:
            Worker(work, max_ticks=0)
        self.assertEqual(
            'Worker work: max_ticks must be a whole number above 0, not 0',
            str(raised.exception))

    def test_the_settings_of_the_process(self):
        worker = Worker(decorated, max_runtime=5, heartbeat=None)
        self.assertEqual({'lock_file': 'job.lock', 'max_runtime': 5},
                         worker.process_settings())


class LoopTest(unittest.TestCase):
    """The loop a Worker makes."""

    def setUp(self):
        self.root = root(self)

    def test_on_the_root_with_the_loops_settings(self):
        recorder = Recorder()
        worker = Worker(decorated, once=True, max_runtime=5)
        loop = worker.make_loop(self.root, [recorder])
        self.assertIs(loop, worker.loop)
        self.assertIs(self.root, loop.app)
        self.assertEqual((5, True), (loop.ticks, loop.once))
        self.assertIsNone(loop.principal_id)
        self.assertIs(loop.outage, loop.middleware[0])
        self.assertIn(recorder, loop.middleware)
        self.assertIn(3, [m.max_ticks for m in loop.middleware
                          if isinstance(m, Limits)])

    def test_on_a_site_in_the_root(self):
        self.root['site'] = zope.site.folder.rootFolder()
        self.root['site'].setSiteManager(
            zope.site.site.LocalSiteManager(self.root['site']))
        self.root['folder'] = persistent.mapping.PersistentMapping()
        loop = Worker(work, 'site').make_loop(self.root)
        self.assertIs(self.root['site'], loop.app)
        with self.assertRaises(UnknownSite) as raised:
            Worker(work, 'nosuch').make_loop(self.root)
        self.assertEqual("Unknown site 'nosuch': the root folder has no item"
                         " of that name", str(raised.exception))
        with self.assertRaises(ConfigurationError) as raised:
            Worker(work, 'folder').make_loop(self.root)
        self.assertEqual("'folder' is not a site: it has no site manager",
                         str(raised.exception))

    def test_a_setting_the_loop_does_not_take(self):
        with self.assertRaises(ConfigurationError) as raised:
            Worker(work, bogus=1).make_loop(self.root)
        self.assertRegex(str(raised.exception), "^Worker work: .*'bogus'$")


class RunSettingsTest(unittest.TestCase):

    def test_no_workers(self):
        with self.assertRaises(ConfigurationError) as raised:
            Run([])
        self.assertEqual('No workers to run', str(raised.exception))

    def test_a_limit_of_the_process_that_is_not_one(self):
        with self.assertRaises(ConfigurationError):
            Run([Worker(work)], max_runtime=0)

    def test_a_single_workers_own_settings_count(self):
        run = Run([Worker(work, max_runtime=5, heartbeat='h')],
                  max_runtime=7)
        self.assertEqual(
            dict(max_runtime=7, max_memory=None, heartbeat='h', metrics=None,
                 metrics_file=None), run.settings)

    def test_in_a_process_of_several_they_give_way(self):
        with self.assertLogs('gocept.runner.assembly', 'WARNING') as logs:
            run = Run([Worker(work, max_runtime=5, heartbeat='h'),
                       Worker(decorated)], max_memory=10**9)
        self.assertEqual(
            dict(max_runtime=None, max_memory=10**9, heartbeat=None,
                 metrics=None, metrics_file=None), run.settings)
        self.assertEqual(
            ['Worker work: its own heartbeat, max_runtime give way to the'
             ' settings of the process it runs in with others'],
            [r.getMessage() for r in logs.records])

    def test_every_lock_file_once(self):
        run = Run([Worker(decorated), Worker(work, lock_file='other.lock'),
                   Worker(decorated)], lock_file='job.lock')
        self.assertEqual(['job.lock', 'other.lock'], run.lock_files)


class RunTest(unittest.TestCase):
    """A Run called with an application."""

    def setUp(self):
        self.root = root(self)
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.steps = []

    @contextlib.contextmanager
    def application(self):
        self.steps.append('set up')
        try:
            yield self.root
        finally:
            self.steps.append('closed')

    def test_it_runs_the_loops_in_a_process_and_returns_it(self):
        path = os.path.join(self.dir, 'run.lock')
        held = []

        def count():
            held.append(lock.holder_of(path) == str(os.getpid()))
            self.steps.append('tick')
            self.root['count'] = self.root.get('count', 0) + 1
        recorder = Recorder()
        heartbeat = os.path.join(self.dir, 'heartbeat')
        process = Run([Worker(count, ticks=0, max_ticks=2)], lock_file=path,
                      heartbeat=heartbeat, middleware=[recorder])(
            self.application())
        self.assertEqual(['set up', 'tick', 'tick', 'closed'], self.steps)
        self.assertEqual([True, True], held)
        [loop] = process.loops
        self.assertEqual('max_ticks', loop.stopped_because)
        transaction.abort()
        self.assertEqual(2, self.root['count'])
        self.assertEqual(['before_process', 'before_loop'],
                         [hook for hook, _ in recorder.calls[:2]])
        self.assertIn(Heartbeat, [type(m) for m in process.middleware])
        self.assertTrue(os.path.exists(heartbeat))
        self.assertIs(recorder, process.middleware[-1])

    def test_a_worker_that_cannot_be_made_ends_the_run_before_any_tick(self):
        ticks = []

        def tick():
            ticks.append(1)
        with self.assertRaises(UnknownSite):
            assembly.run([Worker(tick, once=True),
                          Worker(work, 'nosuch', once=True)],
                         self.application())
        self.assertEqual(['set up', 'closed'], self.steps)
        self.assertEqual([], ticks)

    def test_what_a_single_loop_raises_ends_the_run(self):
        class StartFails(Middleware):
            def before_loop(self, loop):
                raise RuntimeError('cannot start')
        with self.assertRaises(RuntimeError):
            assembly.run([Worker(work, middleware=[StartFails()])],
                         self.application())
        self.assertEqual(['set up', 'closed'], self.steps)
