"""Reading zope.conf: the schema, logging and product configuration."""

import logging
import os.path
import sys
import urllib.parse

import transaction.interfaces
import ZConfig
import ZConfig.components.logger.logger
import zope.app.appsetup.product
import zope.configuration.xmlconfig

from gocept.runner.interfaces import ConfigurationError
from gocept.runner.interfaces import MissingProductConfiguration


log = logging.getLogger(__name__)

# The zope.conf files that come with gocept.runner live here.
HERE = os.path.dirname(os.path.abspath(__file__))


_schema = None


def schema():
    """The ZConfig schema of zope.conf, loaded once."""
    global _schema
    if _schema is None:
        _schema = ZConfig.loadSchema(
            os.path.join(os.path.dirname(__file__), 'schema.xml'))
    return _schema


def load(path):
    """Read and validate the zope.conf at `path`; return its configuration.

    ``site_definition`` is the absolute path find_site_definition() gives.
    Raises ConfigurationError naming the file (and line), without the
    chain of ZConfig's exceptions (which say no more than its message).
    """
    if os.path.isdir(path):
        raise ConfigurationError(
            f'Configuration file {path} is a directory, not a file')
    if not os.path.isfile(path):
        raise ConfigurationError(f'Configuration file not found: {path}')
    try:
        # ZConfig would report an unreadable file as a URL error, and text
        # that is not UTF-8 with a traceback.
        with open(path, 'rb') as f:
            _check_utf8(path, f.read())
        conf, _ = ZConfig.loadConfig(schema(), path)
    except OSError as e:
        raise ConfigurationError(
            f'Cannot read configuration file {path}: {e.strerror}') from None
    except UnicodeDecodeError as e:
        # In a file that `path` includes.
        raise ConfigurationError(
            f'Invalid configuration file {path} (or a file it includes):'
            f' not UTF-8 text: {e}') from None
    except ZConfig.ConfigurationError as e:
        raise invalid(path, e) from None
    conf.site_definition = find_site_definition(conf.site_definition, path)
    _check_databases(path, conf)
    _check_log_files(path, conf)
    return conf


# The first word of a line of a Zope 4+ instance's zope.conf that Zope's
# schema requires and the Zope 3 schema does not know.
INSTANCE_KEY = 'instancehome'


def is_instance_conf(path):
    """Whether `path` is the zope.conf of a Zope 4+ instance.

    It is if a line of the file itself (not of a file it includes) sets
    ``instancehome``, which Zope 4+ requires and Zope 3 has no key for;
    any other file is read as the zope.conf of Zope 3 (see `load`), which
    names what is wrong with it.  A file that cannot be read is not.
    """
    try:
        with open(path, 'rb') as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    # ZConfig's keys are not case-sensitive.
    return any(line.split()[:1] == [INSTANCE_KEY.encode()]
               for line in (line.lower() for line in lines))


def invalid(path, error):
    """The ConfigurationError for ZConfig's `error` in reading `path`: it
    names the file (`path`, or one that it includes) and line."""
    where = error.url or path
    if where.startswith('file://'):
        where = urllib.parse.unquote(where[len('file://'):])
    if getattr(error, 'lineno', None):
        where += f', line {error.lineno}'
    return ConfigurationError(
        f'Invalid configuration file {where}: {error.message}')


def find_site_definition(site_definition, path):
    """The absolute path of the ``site-definition`` of the zope.conf `path`.

    A relative one is looked for in the working directory first (where Zope 3
    and BlueBream instances, which run from the instance root, have it), then
    beside `path`; ConfigurationError names both places if it is in neither
    (and names an absolute one that is missing).  The zope.conf files of
    gocept.runner itself find theirs beside them.
    """
    conf_dir = os.path.dirname(os.path.abspath(path))
    beside = os.path.normpath(os.path.join(conf_dir, site_definition))
    if os.path.isabs(site_definition) or conf_dir == HERE:
        candidates = [beside]
    else:
        candidates = [os.path.abspath(site_definition), beside]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    if len(set(candidates)) == 1:
        places = f'{candidates[0]} does not exist'
    else:
        places = (f'neither {candidates[0]} (in the working directory) nor'
                  f' {beside} (beside zope.conf) exists')
    raise ConfigurationError(
        f'Cannot find the site ZCML {site_definition} (site-definition of'
        f' {path}): {places}')


def ignore_server_settings(conf):
    """Log at DEBUG each setting of a Zope 3 server that `conf` has.

    A runner serves no requests: ``<server>``, ``<sslserver>`` and
    ``<sshserver>`` sections, ``interrupt-check-interval`` and ``threads``
    are accepted and have no effect.
    """
    for section in conf.servers:
        what = section.getSectionType()
        if section.getSectionName():
            what += ' ' + section.getSectionName()
        what = f'<{what}>'
        if section.settings:
            what += ' ({})'.format(', '.join(
                f'{key} {value}' for key, value in section.settings.items()))
        log.debug('Ignoring %s of zope.conf: a runner serves no requests',
                  what)
    for key, value in (
            ('interrupt-check-interval', conf.interrupt_check_interval),
            ('threads', conf.threads)):
        if value is not None:
            log.debug('Ignoring %s %s of zope.conf: a setting of Zope 3'
                      ' servers', key, value)


def configure_path(conf):
    """Put the ``path`` entries of `conf` at the front of sys.path.

    They keep their order and, as in Zope 3, a relative one is taken relative
    to the working directory.  An entry already on sys.path moves to the
    front rather than appearing twice.
    """
    entries = [os.path.abspath(entry) for entry in conf.path]
    sys.path[:] = entries + [
        entry for entry in sys.path if entry not in entries]


def zcml_features(conf):
    """The ZCML features `conf` asks for: ``devmode`` if it is on."""
    return ('devmode',) if conf.devmode else ()


def zcml_error(error):
    """The message of a ZCML error on one line, with file and line."""
    if isinstance(error, zope.configuration.xmlconfig.ZopeSAXParseException):
        # Its "info" is the open file; the parser's message has
        # file:line:column.
        return str(error.evalue)
    lines = (line.strip() for line in str(error).splitlines())
    return '; '.join(line for line in lines if line)


def reason(error):
    """Why the database cannot be opened: `error` on one line."""
    # Imported here: not every program uses a FileStorage.
    from ZODB.FileStorage.FileStorage import FileStorageFormatError
    if isinstance(error, FileStorageFormatError):
        # Its message is just the file name.
        return 'the file is not a FileStorage (or its header is damaged)'
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if isinstance(error, transaction.interfaces.TransientError):
        return f'{error} (is its server running?)'
    return f'{type(error).__name__}: {error}'


def _check_utf8(path, data):
    try:
        data.decode('utf-8')
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b'\n') + 1
        raise ConfigurationError(
            f'Invalid configuration file {path}, line {line}: not UTF-8 text'
            f' (byte 0x{data[e.start]:02x})') from None


def _check_databases(path, conf):
    # ZConfig accepts a <zodb> without a storage; opening it would fail
    # with an AttributeError on None.
    for factory in conf.databases:
        if factory.config.storage is None:
            section = f'<zodb {factory.name}>' if factory.name else '<zodb>'
            raise ConfigurationError(
                f'Invalid configuration file {path}: {section} has no'
                ' storage section (such as <filestorage> or <clientstorage>)')


def _check_log_files(path, conf):
    # Checked here, not when logging is set up, so that the error is a
    # configuration error naming the file, not a FileNotFoundError.
    loggers = [conf.eventlog, *conf.loggers,
               getattr(conf, 'accesslog', None)]
    for logger in loggers:
        for handler in getattr(logger, 'handler_factories', ()):
            log_file = getattr(getattr(handler, 'section', None), 'path', None)
            if log_file in (None, 'STDOUT', 'STDERR'):
                continue
            directory = os.path.dirname(os.path.abspath(log_file))
            if not os.path.isdir(directory):
                raise ConfigurationError(
                    f'Invalid configuration file {path}: the directory of'
                    f' the log file {log_file} does not exist')


class AccessLogFactory(ZConfig.components.logger.logger.LoggerFactoryBase):
    """The ``<accesslog>`` section: handlers of the ``accesslog`` logger."""

    name = 'accesslog'
    propagate = False


# Handlers installed by an earlier call, by logger name, so that a second
# call in the same process replaces them instead of doubling every line.
_handlers = {}


def configure_logging(conf):
    """Set up logging from ``<eventlog>``, ``<logger>`` and ``<accesslog>``.

    A section with handlers replaces the handlers an earlier call installed on
    its logger.  A ``<logger>`` section without handlers sets its logger's
    level and propagation only (as Zope 3 did: ``level WARNING`` quietens a
    chatty library); an ``<eventlog>`` or ``<accesslog>`` without handlers
    leaves logging as it is, so a caller (a test runner, say) may set up log
    output itself.
    """
    for factory in conf.loggers:
        if not factory.handler_factories:
            logger = logging.getLogger(factory.name)
            logger.setLevel(factory.level)
            logger.propagate = factory.propagate
    factories = [conf.eventlog, *conf.loggers]
    if getattr(conf, 'accesslog', None) is not None:
        factories.append(conf.accesslog)
    for factory in factories:
        if not factory.handler_factories:
            continue
        logger = logging.getLogger(factory.name)
        for handler in _handlers.pop(factory.name, ()):
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(factory.level)
        if factory.name is not None:
            logger.propagate = factory.propagate
        handlers = _handlers[factory.name] = [
            handler_factory() for handler_factory in factory.handler_factories]
        for handler in handlers:
            logger.addHandler(handler)


def configure_products(conf):
    """Make the ``<product-config>`` sections of `conf` the product config."""
    zope.app.appsetup.product.setProductConfigurations(conf.product_config)


# The <schedules> of the zope.conf loaded last: dotted name -> schedule.
_schedules = {}


def configure_schedules(conf):
    """Make the ``<schedules>`` section of `conf` (None: none) the
    schedules."""
    global _schedules
    section = getattr(conf, 'schedules', None) if conf else None
    _schedules = {} if section is None else dict(section.entries)


def configure_product_schedules(values):
    """Make the lines of ``<product-config gocept.runner.schedules>``
    (`values`: a name -> the rest of its line), the schedules of a Zope 4+
    instance: each line a name of one's choice, then what a line of
    ``<schedules>`` has."""
    global _schedules
    _schedules = {}
    for value in (values or {}).values():
        dotted, _, spec = value.strip().partition(' ')
        _schedules[dotted] = spec.strip()


def schedules():
    """The entries of ``<schedules>`` in the zope.conf loaded last: each
    job function's dotted name and its schedule ('' for its own)."""
    return dict(_schedules)


def from_config(section, variable):
    """Return a callable that reads `variable` of ``<product-config
    section>``.

    It reads when called (so after zope.conf has been loaded) and raises
    MissingProductConfiguration (a ConfigurationError and a KeyError) naming
    the section or variable which is missing.  The argument names are those
    of gocept.runner 3.x.
    """
    def get():
        values = zope.app.appsetup.product.getProductConfiguration(section)
        if values is None:
            raise MissingProductConfiguration(
                f'zope.conf has no <product-config {section}> (asked for'
                f' its key {variable!r})')
        try:
            return values[variable]
        except KeyError:
            raise MissingProductConfiguration(
                f'<product-config {section}> has no key {variable!r} in'
                ' zope.conf') from None
    return get


# The <sentry> settings of the zope.conf loaded last, those it gives.
_sentry = {}


def configure_sentry(conf):
    """Keep the ``<sentry>`` section of `conf` (None: none) for sentry().

    Raises ConfigurationError for a sample rate outside 0 to 1, or a
    ``monitor`` line that is not a dotted name and a slug.
    """
    global _sentry
    section = getattr(conf, 'sentry', None) if conf else None
    settings = {}
    if section is not None:
        for name in ('dsn', 'environment', 'release', 'sample_rate'):
            value = getattr(section, name)
            if value is not None:
                settings[name] = value
        rate = settings.get('sample_rate')
        if rate is not None and not 0 <= rate <= 1:
            raise ConfigurationError(
                f'<sentry>: sample-rate must be from 0 to 1, not {rate}')
        monitors = {}
        for line in section.monitors:
            words = line.split()
            if len(words) != 2:
                raise ConfigurationError(
                    f'<sentry>: monitor takes a dotted name and a slug, not'
                    f' {line!r}')
            monitors[words[0]] = words[1]
        settings['monitors'] = monitors
    _sentry = settings


def sentry():
    """The settings of ``<sentry>`` in the zope.conf loaded last that it
    gives (``dsn``, ``environment``, ``release``, ``sample_rate``,
    ``monitors``: dotted name -> slug)."""
    return dict(_sentry)


def sentry_dsn():
    """The DSN to report to: zope.conf's, else SENTRY_DSN's; None (or '')
    for none."""
    return _sentry.get('dsn', os.environ.get('SENTRY_DSN'))
