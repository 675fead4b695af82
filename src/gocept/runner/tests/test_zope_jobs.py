"""Jobs and schedules on a Zope 4+ instance: real processes of
``gocept-runner`` that put jobs in their ticks and of ``gocept-jobs``
that run and show them."""

import base64
import os
import re
import shutil
import signal
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from gocept.runner import testing
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


class JobsTestCase(InstanceTestCase):

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

    def assertMadeByEditor(self, folder):
        """`folder` was made by the job make_folder, run in sites/intranet
        as its user editor, in a transaction that names the user as Zope's
        publisher does."""
        self.assertEqual(('editor', '/sites/intranet'),
                         (folder.seen_user, folder.seen_site))
        self.assertEqual((['sites', 'intranet', 'acl_users'], 'editor'),
                         folder.getOwnerTuple())
        storage = folder._p_jar.db().storage
        [txn] = storage.iterator(folder._p_serial, folder._p_serial)
        self.assertEqual(b'sites/intranet editor', txn.user)

    def jobs(self, *args):
        """Run gocept-jobs with `args` on the instance; return its status
        and output."""
        return self.run_runner(*args, '-C', self.zope_conf, command=JOBS)


class ZopeJobsTests(JobsTestCase):

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
        self.assertMadeByEditor(app.sites.intranet['by-site-job'])
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


# The ZCML of an instance's etc/package-includes that registers the view
# @@put-job (zopeworkers.PutJob) for everything, for users who may manage.
PUT_JOB_ZCML = f"""\
<configure xmlns="http://namespaces.zope.org/zope"
           xmlns:browser="http://namespaces.zope.org/browser">
  <include package="Products.Five" file="meta.zcml" />
  <browser:page for="*" name="put-job" class="{WORKERS}.PutJob"
                permission="zope2.ViewManagementScreens" />
</configure>
"""

# A zope.ini for Zope's WSGI server (runwsgi) on 127.0.0.1.
ZOPE_INI = """\
[app:main]
use = egg:Zope#main
zope_conf = %(here)s/zope.conf

[server:main]
use = egg:waitress#main
host = 127.0.0.1
port = {port}
"""


class RequestTests(JobsTestCase):
    """Jobs put in the transactions of real HTTP requests, to the instance
    served by Zope's own WSGI server (``runwsgi``, waitress) on the ZEO
    server of the instance, which the job workers use too."""

    def setUp(self):
        super().setUp()
        # An instance of the test's own, for its etc/site.zcml with the
        # view, on the database of the instance's ZEO server.
        etc = self.path('instance', 'etc')
        os.makedirs(os.path.join(etc, 'package-includes'))
        os.makedirs(self.path('instance', 'var', 'cache'))
        shutil.copy(os.path.join(
            testing.ZOPE_INSTANCE_LAYER.instance, 'etc', 'site.zcml'), etc)
        with open(os.path.join(
                etc, 'package-includes', 'put-job-configure.zcml'), 'w') as f:
            f.write(PUT_JOB_ZCML)
        with open(self.zeo_conf) as f:
            conf = re.sub(r'(?m)^%define INSTANCE .*$',
                          f'%define INSTANCE {self.path("instance")}',
                          f.read())
        with open(os.path.join(etc, 'zope.conf'), 'w') as f:
            f.write(conf)
        self.port = testing.free_port()
        with open(os.path.join(etc, 'zope.ini'), 'w') as f:
            f.write(ZOPE_INI.format(port=self.port))
        self.server = self.start(
            os.path.join(etc, 'zope.ini'),
            command=[sys.executable, '-m', 'Zope2.Startup.serve'])
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                socket.create_connection(('127.0.0.1', self.port)).close()
                break
            except OSError:
                if self.server.poll() is not None or (
                        time.monotonic() > deadline):
                    self.fail(f'runwsgi did not start:\n{self.output()}')
                time.sleep(0.1)

    def request(self, path, user='editor:secret', **form):
        """GET `path` with `form` as `user`; return the status and the
        body."""
        credentials = base64.b64encode(user.encode()).decode()
        request = urllib.request.Request(
            f'http://127.0.0.1:{self.port}/{path}?'
            f'{urllib.parse.urlencode(form)}',
            headers={'Authorization': f'Basic {credentials}'})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def work(self):
        """Run a job worker on the site until no job is left."""
        status, output = self.run_runner(
            'work', '-C', self.zeo_conf, '-s', 'sites/intranet', '--burst',
            '--import', WORKERS, command=JOBS)
        self.assertEqual((0, ''), (status, output))

    def test_a_job_put_in_a_request_runs_as_the_user_of_the_request(self):
        status, job_id = self.request('sites/intranet/@@put-job',
                                      name='by-request')
        self.assertEqual(200, status, job_id)
        self.assertRegex(job_id, r'^\w+$')
        self.work()
        app, _ = self.opened('zeo')
        self.assertMadeByEditor(app.sites.intranet['by-request'])
        status, output = self.run_runner(
            'show', job_id, '-C', self.zeo_conf, command=JOBS)
        self.assertEqual(0, status, output)
        self.assertIn('Status: done\n', output)
        self.assertIn('Principal: editor\n', output)

    def list_jobs(self):
        status, output = self.run_runner(
            'list', '-C', self.zeo_conf, command=JOBS)
        self.assertEqual(0, status, output)
        return output

    def test_a_job_put_in_a_request_that_fails_does_not_exist(self):
        before = self.list_jobs()
        status, body = self.request('sites/intranet/@@put-job',
                                    name='by-failed-request', fail='1')
        self.assertEqual(500, status, body)
        # The request's transaction, the job's put with it, was aborted.
        self.assertEqual(before, self.list_jobs())
        self.work()
        app, _ = self.opened('zeo')
        self.assertNotIn('by-failed-request', app.sites.intranet.objectIds())
