"""Helpers for testing runners: zope.conf files, real ZEO and PostgreSQL
servers, a Zope 4+ instance, the layers of the slow tests.

The ZEO server needs the ``zeo`` extra (the ZEO package); the PostgreSQL
server needs PostgreSQL installed and the ``relstorage`` extra; the Zope
instance the ``zope`` extra.  SentryServer receives what sentry-sdk sends.
"""

import gzip
import http.server
import importlib.util
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zlib


FTESTING_ZCML = os.path.join(os.path.dirname(__file__), 'ftesting.zcml')

LOG_TO_STDOUT = """\
<eventlog>
  <logfile>
    path STDOUT
    format %(levelname)s %(name)s %(message)s
  </logfile>
</eventlog>
"""


def write_zope_conf(directory, zodb=None, log=LOG_TO_STDOUT, extra='',
                    site_zcml=FTESTING_ZCML):
    """Write ``zope.conf`` into `directory`; return its path.

    By default the database is a FileStorage ``Data.fs`` in `directory`, the
    site is ``ftesting.zcml`` (the minimal site and a principal ``zope.mgr``)
    and the log goes to standard output without time stamps.
    """
    if zodb is None:
        zodb = (f'<zodb>\n  <filestorage>\n    path {directory}/Data.fs\n'
                '  </filestorage>\n</zodb>\n')
    path = os.path.join(directory, 'zope.conf')
    with open(path, 'w') as f:
        f.write(f'site-definition {site_zcml}\n{zodb}{log}{extra}')
    return path


class SubprocessLayer:
    """A zope.testrunner layer of the tests that start programs in
    processes of their own (runner programs, ``gocept-runner``, a server
    of their own) and wait for them.

    It sets nothing up (zope.testrunner calls setUp and tearDown only
    where a layer has them): it only keeps them out of ``zope-testrunner
    --unit``, the tests of the loop and its middleware that run in
    seconds.
    """


class JobsLayer:
    """A zope.testrunner layer of the tests that run job workers (``gocept-jobs
    work``, the workers of gocept.runner.jobs) in processes of their own on
    a FileStorage, and wait for them.

    Like SubprocessLayer, it sets nothing up: a layer of its own lets
    ``zope-testrunner -j2`` run these beside the others.
    """


class DocsLayer:
    """A zope.testrunner layer of the pages of the documentation that run
    as a reader runs them: their shell sessions, the tutorial with its
    virtualenv and ``pip install``, the deployment guides.

    Like SubprocessLayer, it sets nothing up.
    """


def file_storage_db(test):
    """A ZODB.DB on a FileStorage in a temporary directory of its own,
    closed and removed when the unittest.TestCase `test` ends."""
    import ZODB
    import ZODB.FileStorage
    directory = tempfile.mkdtemp(prefix='gocept.runner.')
    test.addCleanup(shutil.rmtree, directory)
    db = ZODB.DB(ZODB.FileStorage.FileStorage(
        os.path.join(directory, 'Data.fs')))
    test.addCleanup(db.close)
    return db


class Synchronizer:
    """A transaction synchronizer that does nothing: tests subclass it
    for what they do at one point of a transaction (register an instance
    that is kept: a transaction manager holds its synchronizers
    weakly)."""

    def newTransaction(self, txn):
        pass

    def beforeCompletion(self, txn):
        pass

    def afterCompletion(self, txn):
        pass


def free_port():
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _wait_until_ready(server, name, log, timeout):
    """Wait until `server` (a ZEOServer or PostgreSQLServer whose process
    has just started) is ready; stop it and raise RuntimeError if it exits
    or is not ready within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not server.ready():
        if server.process.poll() is not None:
            raise RuntimeError(
                f'{name} exited with status {server.process.returncode};'
                f' see {os.path.join(server.directory, log)}')
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                f'{name} did not accept connections on port {server.port}'
                f' within {timeout} s')
        time.sleep(0.05)


def _stop(server, signum):
    """Send `signum` to the process of `server`, if it runs, and wait until
    it has exited (kill it after 30 seconds)."""
    if server.process is None:
        return
    server.process.send_signal(signum)
    try:
        server.process.wait(30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    server.process = None


class SentryServer:
    """A Sentry of the test's own on 127.0.0.1: an HTTP server in a thread
    that takes the envelopes sentry-sdk POSTs to /api/PROJECT/envelope/
    (gzip'ed, deflated or brotli'd, as the SDK sends them) and keeps their
    items.  `dsn` points the SDK at it.

    Use it as a context manager, or `start` and `stop` it.
    """

    def __init__(self, project=1):
        self.project = project
        self._items = []
        self._changed = threading.Condition()
        self._server = http.server.ThreadingHTTPServer(
            ('127.0.0.1', 0), self._handler())
        self.port = self._server.server_address[1]
        self._thread = None

    @property
    def dsn(self):
        return f'http://public@127.0.0.1:{self.port}/{self.project}'

    def start(self):
        self._thread = threading.Thread(
            target=self._server.serve_forever, name='SentryServer',
            daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    __enter__ = start

    def __exit__(self, *exc_info):
        self.stop()

    def items(self, type=None):
        """The items received so far (dicts of the item's `type` and its
        `payload`, the parsed JSON), of `type` if given."""
        with self._changed:
            return [item for item in self._items
                    if type is None or item['type'] == type]

    def events(self):
        """The payloads of the events received."""
        return [item['payload'] for item in self.items('event')]

    def check_ins(self):
        """The payloads of the Crons check-ins received."""
        return [item['payload'] for item in self.items('check_in')]

    def wait_for(self, condition, timeout=30):
        """Wait until `condition()` is true; return its value, or raise
        AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = condition()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f'Timed out after {timeout} s; received:'
                        f' {self._items!r}')
                self._changed.wait(remaining)

    def _receive(self, path, encoding, body):
        if path != f'/api/{self.project}/envelope/':
            return 404
        items = parse_envelope(decompress(body, encoding))
        with self._changed:
            self._items.extend(items)
            self._changed.notify_all()
        return 200

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(
                    int(self.headers.get('Content-Length', 0)))
                status = server._receive(
                    self.path, self.headers.get('Content-Encoding', ''),
                    body)
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', '2')
                self.end_headers()
                self.wfile.write(b'{}')

            def log_message(self, *args):
                pass  # not on the test's stderr
        return Handler


def decompress(body, encoding):
    """`body` as sent with the Content-Encoding `encoding`."""
    encoding = encoding.strip().lower()
    if encoding == 'gzip':
        return gzip.decompress(body)
    if encoding == 'deflate':
        return zlib.decompress(body)
    if encoding == 'br':
        import brotli  # only sent by an SDK that has it
        return brotli.decompress(body)
    return body


def parse_envelope(data):
    """The items of the Sentry envelope `data` (bytes): dicts of `type`,
    `headers` and `payload` (parsed JSON, else the bytes)."""
    _, _, rest = data.partition(b'\n')  # the envelope's own headers
    items = []
    while rest.strip():
        line, _, rest = rest.partition(b'\n')
        headers = json.loads(line)
        if 'length' in headers:
            length = headers['length']
            payload, rest = rest[:length], rest[length + 1:]
        else:
            payload, _, rest = rest.partition(b'\n')
        try:
            payload = json.loads(payload)
        except ValueError:
            pass
        items.append({'type': headers.get('type'), 'headers': headers,
                      'payload': payload})
    return items


class ZEOServer:
    """A ZEO server (``runzeo``) serving a FileStorage in `directory`.

    It listens on a free loopback port, which it keeps across stop() and
    start(), so that clients reconnect to a restarted server.  Its output
    goes to ``zeo.log`` in `directory`.
    """

    def __init__(self, directory):
        self.directory = directory
        self.path = os.path.join(directory, 'Data.fs')
        self.port = free_port()
        self.process = None

    @property
    def address(self):
        return f'127.0.0.1:{self.port}'

    def start(self, timeout=30):
        """Start the server; return when it accepts connections."""
        with open(os.path.join(self.directory, 'zeo.log'), 'ab') as log:
            self.process = subprocess.Popen(
                [sys.executable, '-m', 'ZEO.runzeo',
                 '-a', self.address, '-f', self.path],
                stdout=log, stderr=subprocess.STDOUT)
        _wait_until_ready(self, 'The ZEO server', 'zeo.log', timeout)

    def ready(self):
        """Whether the server accepts connections."""
        try:
            socket.create_connection(('127.0.0.1', self.port), 1).close()
        except OSError:
            return False
        return True

    def stop(self):
        """Stop the server (SIGTERM) and wait until it has exited."""
        _stop(self, signal.SIGTERM)

    def zodb_section(self, **options):
        """A ``<zodb>`` section for zope.conf using this server.

        `options` are more ``<zeoclient>`` keys (underscores for dashes).
        """
        lines = [f'    server {self.address}']
        lines += [f'    {key.replace("_", "-")} {value}'
                  for key, value in options.items()]
        return '<zodb>\n  <zeoclient>\n{}\n  </zeoclient>\n</zodb>\n'.format(
            '\n'.join(lines))


class ZEOLayer:
    """A zope.testrunner layer with a ZEO server in a temporary directory.

    Tests reach the server as ``layer.server`` (a ZEOServer).
    """

    __bases__ = ()

    def __init__(self, name='ZEOLayer'):
        self.__name__ = name
        self.__module__ = __name__
        self.server = None

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='gocept.runner.zeo.')
        self.server = ZEOServer(self.directory)
        self.server.start()

    def tearDown(self):
        self.server.stop()
        self.server = None
        shutil.rmtree(self.directory)


ZEO_LAYER = ZEOLayer()


def postgresql_bin():
    """The directory of PostgreSQL's server programs, or None.

    ``initdb`` on the PATH, else the newest of Debian's
    ``/usr/lib/postgresql/VERSION/bin`` (which the PATH has not).
    """
    initdb = shutil.which('initdb')
    if initdb is not None:
        return os.path.dirname(os.path.realpath(initdb))
    candidates = []
    for version in _listdir('/usr/lib/postgresql'):
        directory = os.path.join('/usr/lib/postgresql', version, 'bin')
        if version.isdigit() and os.path.exists(
                os.path.join(directory, 'initdb')):
            candidates.append((int(version), directory))
    return max(candidates)[1] if candidates else None


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


class PostgreSQLServer:
    """A throwaway PostgreSQL cluster in `directory`, for tests.

    ``initdb`` makes the cluster on the first start() (as the ``postgres``
    user when we are root: PostgreSQL refuses to run as root).  The server
    listens on 127.0.0.1 on a free port, which it keeps across stop() and
    start(), has its socket in `directory` and runs with fsync off; its
    output goes to ``postgresql.log`` in `directory`.  Every role connects
    as the superuser ``postgres`` without a password.
    """

    user = 'postgres'

    def __init__(self, directory, bin=None):
        self.directory = directory
        self.bin = bin or postgresql_bin()
        if self.bin is None:
            raise RuntimeError('PostgreSQL is not installed: no initdb')
        self.data = os.path.join(directory, 'data')
        self.port = free_port()
        self.process = None

    def _run_as(self):
        # The keyword arguments of subprocess that run a server program.
        if os.geteuid() != 0:
            return {}
        return {'user': self.user, 'group': self.user, 'extra_groups': []}

    def start(self, timeout=30):
        """Start the server (after initdb, the first time); return when it
        accepts connections."""
        # The relstorage extra's driver: without it, fail now, not after
        # the timeout.
        import psycopg2  # noqa: F401
        if not os.path.exists(self.data):
            self._initdb()
        with open(os.path.join(self.directory, 'postgresql.log'), 'ab') as log:
            self.process = subprocess.Popen(
                [os.path.join(self.bin, 'postgres'), '-D', self.data,
                 '-h', '127.0.0.1', '-p', str(self.port),
                 '-k', self.directory, '-F'],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                **self._run_as())
        _wait_until_ready(self, 'PostgreSQL', 'postgresql.log', timeout)

    def ready(self):
        """Whether the server accepts connections."""
        import psycopg2
        try:
            self.connect().close()
        except psycopg2.OperationalError:
            return False
        return True

    def _initdb(self):
        if os.geteuid() == 0:
            # The server runs as postgres: it needs the directory, and the
            # way to it (a 0700 checkout or TMPDIR would bar it).
            shutil.chown(self.directory, self.user, self.user)
            if not _searchable(self.directory):
                raise RuntimeError(
                    f'The user {self.user} cannot reach {self.directory}')
        result = subprocess.run(
            [os.path.join(self.bin, 'initdb'), '-D', self.data,
             '-U', self.user, '-A', 'trust', '-E', 'UTF8', '--locale', 'C',
             '--no-sync'],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=self.directory, **self._run_as())
        if result.returncode:
            raise RuntimeError(
                f'initdb failed with status {result.returncode}:'
                f' {result.stdout.decode(errors="replace")}')

    def stop(self):
        """Stop the server (SIGINT, a fast shutdown: it disconnects its
        clients) and wait until it has exited."""
        _stop(self, signal.SIGINT)

    def dsn(self, dbname='postgres'):
        """The libpq connection string of the database `dbname`."""
        return (f'host=127.0.0.1 port={self.port} dbname={dbname}'
                f' user={self.user}')

    def connect(self, dbname='postgres'):
        """A psycopg2 connection (autocommit) to the database `dbname`."""
        import psycopg2
        connection = psycopg2.connect(self.dsn(dbname), connect_timeout=5)
        connection.autocommit = True
        return connection

    def create_database(self, dbname):
        """Create the empty database `dbname`."""
        self._execute(f'CREATE DATABASE "{dbname}"')

    def drop_database(self, dbname):
        """Drop the database `dbname` (closing its connections), if any."""
        self._execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

    def _execute(self, statement):
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()

    def zodb_section(self, dbname, **options):
        """A ``<zodb>`` section for zope.conf on the database `dbname`, after
        the ``%import relstorage`` it needs.

        `options` are more ``<relstorage>`` keys (underscores for dashes).
        """
        lines = [f'    {key.replace("_", "-")} {value}'
                 for key, value in options.items()]
        lines.append(f'    <postgresql>\n      dsn {self.dsn(dbname)}\n'
                     '    </postgresql>')
        return ('%import relstorage\n<zodb>\n  <relstorage>\n{}\n'
                '  </relstorage>\n</zodb>\n'.format('\n'.join(lines)))


def _searchable(path):
    """Whether everybody may pass through every directory above `path`."""
    path = os.path.dirname(os.path.abspath(path))
    while True:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


class PostgreSQLLayer:
    """A zope.testrunner layer with a throwaway PostgreSQL server.

    Tests reach it as ``layer.server`` (a PostgreSQLServer).  Where
    PostgreSQL is not installed, ``layer.server`` is None and
    ``layer.missing`` says why, so that the tests can skip; but not in CI
    (the environment variable CI is ``true``), where they are to run.
    """

    __bases__ = ()

    def __init__(self, name='PostgreSQLLayer'):
        self.__name__ = name
        self.__module__ = __name__
        self.server = None
        self.missing = None

    def setUp(self):
        if postgresql_bin() is None:
            self.missing = ('PostgreSQL is not installed (no initdb on the'
                            ' PATH or in /usr/lib/postgresql/*/bin)')
            if os.environ.get('CI') == 'true':
                raise RuntimeError(f'{self.missing}, but CI needs it')
            return
        # Under /tmp, not TMPDIR: the postgres user must reach it.
        parent = None
        if os.geteuid() == 0 and not _searchable(
                os.path.join(tempfile.gettempdir(), 'x')):
            parent = '/tmp'
        self.directory = tempfile.mkdtemp(prefix='gocept.runner.pg.',
                                          dir=parent)
        self.server = PostgreSQLServer(self.directory)
        try:
            self.server.start()
        except BaseException:
            shutil.rmtree(self.directory)
            self.server = None
            raise

    def tearDown(self):
        if self.server is not None:
            self.server.stop()
            self.server = None
            shutil.rmtree(self.directory)
        self.missing = None


POSTGRESQL_LAYER = PostgreSQLLayer()


class ZopeInstanceLayer:
    """A zope.testrunner layer with a Zope 4+ instance in a temporary
    directory, made by Zope's ``mkwsgiinstance`` with the user ``admin``
    (password ``admin``), and a ZEO server of its own (the database of
    ZEO_LAYER's has the root folder of the Zope 3 stack, which Zope cannot
    take for its application).

    ``layer.instance`` is its directory; ``layer.zope_conf`` its
    ``etc/zope.conf`` as mkwsgiinstance wrote it (a FileStorage in
    ``var/Data.fs``), ``layer.zeo_conf`` the same with a ``<zeoclient>``
    of that server instead, for tests of several processes.  Where Zope is
    not installed, ``layer.instance`` is None and ``layer.missing`` says
    why, so that the tests can skip; but not in CI (the environment
    variable CI is ``true``), where they are to run.
    """

    __bases__ = ()

    def __init__(self, name='ZopeInstanceLayer'):
        self.__name__ = name
        self.__module__ = __name__
        self.instance = self.zope_conf = self.zeo_conf = None
        self.missing = None

    def setUp(self):
        if importlib.util.find_spec('Zope2') is None:
            self.missing = ('Zope is not installed (pip install'
                            ' gocept.runner[zope])')
            if os.environ.get('CI') == 'true':
                raise RuntimeError(f'{self.missing}, but CI needs it')
            return
        self.directory = tempfile.mkdtemp(prefix='gocept.runner.zope.')
        self.instance = os.path.join(self.directory, 'instance')
        os.mkdir(os.path.join(self.directory, 'zeo'))
        self.server = ZEOServer(os.path.join(self.directory, 'zeo'))
        self.server.start()
        subprocess.run(
            [sys.executable, '-m', 'Zope2.utilities.mkwsgiinstance',
             '-d', self.instance, '-u', 'admin:admin'],
            check=True, stdout=subprocess.DEVNULL)
        self.zope_conf = os.path.join(self.instance, 'etc', 'zope.conf')
        self.zeo_conf = os.path.join(self.instance, 'etc', 'zeo.conf')
        with open(self.zope_conf) as f:
            conf = f.read()
        storage = ('<filestorage>\n     path $INSTANCE/var/Data.fs\n'
                   '   </filestorage>')
        if storage not in conf:
            raise RuntimeError(
                f'mkwsgiinstance wrote an unknown storage: {self.zope_conf}')
        with open(self.zeo_conf, 'w') as f:
            f.write(conf.replace(storage, (
                '<zeoclient>\n     server'
                f' {self.server.address}\n   </zeoclient>')))

    def tearDown(self):
        if self.instance is not None:
            self.server.stop()
            shutil.rmtree(self.directory)
        self.instance = self.zope_conf = self.zeo_conf = None
        self.missing = None


ZOPE_INSTANCE_LAYER = ZopeInstanceLayer()


class PloneSiteLayer(ZopeInstanceLayer):
    """A ZopeInstanceLayer (an instance and a ZEO server of its own) whose
    database has the Plone 6 site ``Plone``, made once by Products.CMFPlone's
    site factory (addPloneSite, with the content types of
    plone.app.contenttypes), with the user ``editor`` (a Contributor and
    Editor) in the site's user folder.  Use ``layer.zeo_conf``.  Where
    Plone is not installed, ``layer.missing`` says so, in CI, too: CI runs
    these tests in an environment of their own (``tox -e plone``), as
    Plone installed slows the start of every Zope instance down."""

    def __init__(self, name='PloneSiteLayer'):
        super().__init__(name)

    def setUp(self):
        if importlib.util.find_spec('Products.CMFPlone') is None:
            self.missing = ('Plone is not installed (pip install'
                            ' gocept.runner[plone], or tox -e plone)')
            return
        super().setUp()
        if self.missing:
            return
        # Plone's set-up logs warnings of its own on stderr: shown only if
        # it fails.
        made = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), 'gocept-runner'),
             '-C', self.zeo_conf, '--once', '--principal', 'admin',
             'gocept.runner.tests.ploneworkers:add_site'],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, ZOPE_TEST_DIR=self.directory))
        if made.returncode:
            self.tearDown()
            raise RuntimeError(
                f'Cannot make the Plone site (status {made.returncode}):'
                f'\n{made.stdout}')


PLONE_SITE_LAYER = PloneSiteLayer()
