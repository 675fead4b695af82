"""Jobs and schedules on a Zope 4+ instance: real processes of
``gocept-runner`` that put jobs in their ticks and of ``gocept-jobs``
that run and show them."""

import os
import signal

from gocept.runner.tests.test_zopeapp import BIN
from gocept.runner.tests.test_zopeapp import TIMEOUT
from gocept.runner.tests.test_zopeapp import WORKERS
from gocept.runner.tests.test_zopeapp import InstanceTestCase


JOBS = [os.path.join(BIN, 'gocept-jobs')]
JOB_NAME = f'{WORKERS}:make_folder'

SCHEDULES = f"""
<product-config gocept.runner.schedules>
  Every-Second {WORKERS}.every_second
</product-config>
"""


class ZopeJobsTests(InstanceTestCase):

    def put(self, name, *args):
        """Put the job make_folder(name) in a tick of gocept-runner with
        `args`; return its id."""
        status, output = self.run_runner(
            '-C', self.zope_conf, '--once', *args, f'{WORKERS}:put', name)
        self.assertEqual((0, ''), (status, output))
        with open(self.path('put')) as f:
            return f.read()

    def run_runner(self, *args, **kw):
        """Run the command to its end; return its status and its output
        alone."""
        if os.path.exists(self.path('output')):
            os.remove(self.path('output'))
        return super().run_runner(*args, **kw)

    def jobs(self, *args):
        """Run gocept-jobs with `args` on the instance; return its status
        and output."""
        return self.run_runner(*args, '-C', self.zope_conf, command=JOBS)

    def test_a_job_put_at_the_root_runs_in_a_worker_at_the_root(self):
        job_id = self.put('by-root-job', '--principal', 'admin')
        status, output = self.jobs('work', '--burst', '--import', WORKERS)
        self.assertEqual((0, ''), (status, output))
        app, last = self.opened()
        folder = app['by-root-job']
        self.assertEqual('admin', folder.seen_user)
        self.assertIsNone(folder.seen_site)
        self.assertEqual((['acl_users'], 'admin'), folder.getOwnerTuple())
        status, output = self.jobs('list', '--done')
        self.assertEqual(0, status)
        self.assertRegex(output, rf'(?m)^{job_id}  done +1  .*  {JOB_NAME}$')

    def test_a_job_put_in_a_site_runs_there_as_its_user(self):
        job_id = self.put('by-site-job', '-s', 'sites/intranet',
                          '--principal', 'editor')
        status, output = self.jobs(
            'work', '--burst', '--import', WORKERS, '-s', 'sites/intranet')
        self.assertEqual((0, ''), (status, output))
        app, _ = self.opened()
        folder = app.sites.intranet['by-site-job']
        self.assertEqual(('editor', '/sites/intranet'),
                         (folder.seen_user, folder.seen_site))
        self.assertEqual((['sites', 'intranet', 'acl_users'], 'editor'),
                         folder.getOwnerTuple())
        # Its transaction names the user as Zope's publisher does.
        storage = folder._p_jar.db().storage
        [txn] = storage.iterator(folder._p_serial, folder._p_serial)
        self.assertEqual(b'sites/intranet editor', txn.user)
        status, output = self.jobs('show', job_id)
        self.assertEqual(0, status, output)
        self.assertIn('Status: done\n', output)
        self.assertIn('Principal: editor\n', output)
        self.assertIn("Result: 'by-site-job'\n", output)

    def test_failed_jobs_are_retried_and_purged_on_the_instance(self):
        # editor is a user of sites/intranet: a worker at the root does
        # not know it, and the jobs fail, naming it.
        retried, purged = (
            self.put(name, '-s', 'sites/intranet', '--principal', 'editor')
            for name in ('retried', 'purged'))
        status, output = self.jobs('work', '--burst', '--import', WORKERS)
        self.assertEqual(0, status, output)
        status, output = self.jobs('list', '--failed')
        self.assertEqual(0, status)
        # The other tests of the layer fail no job.
        self.assertEqual(
            sorted([retried, purged]),
            sorted(line.split()[0] for line in output.splitlines()))
        self.assertEqual(2, output.count(
            "ConfigurationError: Unknown user 'editor': no acl_users from /"
            " up to the root knows it\n"))
        self.assertEqual((0, 'retried 1 failed job\n'),
                         self.jobs('retry', retried))
        self.assertEqual((0, 'purged 1 failed job\n'),
                         self.jobs('purge', '--failed'))
        # A worker on the site knows editor.
        status, output = self.jobs(
            'work', '--burst', '--import', WORKERS, '-s', 'sites/intranet')
        self.assertEqual((0, ''), (status, output))
        app, _ = self.opened()
        self.assertEqual('editor', app.sites.intranet['retried'].seen_user)
        self.assertNotIn('purged', app.sites.intranet.objectIds())
        status, output = self.jobs('list')
        self.assertEqual(0, status)
        self.assertRegex(output, rf'(?m)^{retried}  done +2  .*  {JOB_NAME}$')

    def test_a_schedule_fires_on_the_instance(self):
        conf = self.path('zope.conf')
        with open(self.zope_conf) as f, open(conf, 'w') as out:
            out.write(f.read() + SCHEDULES)
        process = self.start('work', '-C', conf, command=JOBS)
        self.wait_for('scheduled')
        process.send_signal(signal.SIGTERM)
        self.assertEqual(0, process.wait(TIMEOUT), self.output())
        app, _ = self.opened()
        self.assertGreaterEqual(app.scheduled, 1)
        status, output = self.run_runner('schedules', '-C', conf,
                                         command=JOBS)
        self.assertEqual(0, status, output)
        self.assertRegex(
            output, rf'  (done|pending|running) .*  {WORKERS}:every_second'
                    r'  every 1 second')
