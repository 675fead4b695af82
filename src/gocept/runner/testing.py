"""Helpers for testing runners: zope.conf files and a real ZEO server.

The ZEO server needs the ``zeo`` extra (the ZEO package).
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


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


def free_port():
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


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
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f'The ZEO server exited with status'
                    f' {self.process.returncode}; see {self.directory}'
                    '/zeo.log')
            try:
                socket.create_connection(('127.0.0.1', self.port), 1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f'The ZEO server did not listen on {self.address}'
                        f' within {timeout} s')
                time.sleep(0.05)

    def stop(self):
        """Stop the server (SIGTERM) and wait until it has exited."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

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
