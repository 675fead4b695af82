"""Reading zope.conf: the schema, logging and product configuration."""

import logging
import os.path
import urllib.parse

import ZConfig
import ZConfig.components.logger.logger
import zope.app.appsetup.product


class ConfigurationError(Exception):
    """The runner cannot start: zope.conf, the site ZCML, the database, the
    site or the principal is not what it needs.

    The message names the problem (and the file and line where there is one).
    """


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

    A relative ``site-definition`` is made absolute against the directory of
    `path`.  Raises ConfigurationError naming the file (and line).
    """
    if not os.path.isfile(path):
        raise ConfigurationError(f'Configuration file not found: {path}')
    try:
        # ZConfig would report an unreadable file as a URL error.
        with open(path, 'rb'):
            pass
        conf, _ = ZConfig.loadConfig(schema(), path)
    except OSError as e:
        raise ConfigurationError(
            f'Cannot read configuration file {path}: {e.strerror}') from e
    except ZConfig.ConfigurationError as e:
        # The error may be in a file that `path` includes.
        where = e.url or path
        if where.startswith('file://'):
            where = urllib.parse.unquote(where[len('file://'):])
        if getattr(e, 'lineno', None):
            where += f', line {e.lineno}'
        raise ConfigurationError(
            f'Invalid configuration file {where}: {e.message}') from e
    conf.site_definition = os.path.abspath(os.path.join(
        os.path.dirname(os.path.abspath(path)), conf.site_definition))
    return conf


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
    its logger; a section without handlers leaves that logger as it is, so a
    caller (a test runner, say) may set up log output itself.
    """
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


def from_config(section, variable):
    """Return a callable that reads `variable` of ``<product-config
    section>``.

    It reads when called (so after zope.conf has been loaded) and raises a
    KeyError that names the section or variable which is missing.  The
    argument names are those of gocept.runner 3.x.
    """
    def get():
        values = zope.app.appsetup.product.getProductConfiguration(section)
        if values is None:
            raise KeyError(f'zope.conf has no <product-config {section}>')
        try:
            return values[variable]
        except KeyError:
            raise KeyError(
                f'<product-config {section}> has no key {variable!r}'
            ) from None
    return get
