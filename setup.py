import os.path

from setuptools import find_namespace_packages
from setuptools import setup


def read(*path):
    with open(os.path.join(os.path.dirname(__file__), *path)) as f:
        return f.read()


setup(
    name='gocept.runner',
    version='4.0.dev0',
    author='gocept gmbh & co. kg',
    author_email='mail@gocept.com',
    description='Create stand-alone programs with the full Zope environment'
                ' set up, running a worker in a main loop against a ZODB.',
    long_description='\n\n'.join([
        read('README.rst'),
        read('CHANGES.rst'),
    ]),
    long_description_content_type='text/x-rst',
    keywords='zope zodb runner cron daemon',
    license_expression='ZPL-2.1',
    license_files=['LICENSE.txt', 'COPYRIGHT.txt'],
    url='https://github.com/gocept/gocept.runner',
    project_urls={
        'Documentation': 'https://gocept-runner.readthedocs.io/',
        'Source': 'https://github.com/gocept/gocept.runner',
        'Issues': 'https://github.com/gocept/gocept.runner/issues',
        'Changelog': 'https://github.com/gocept/gocept.runner/blob/master/'
                     'CHANGES.rst',
    },
    classifiers=[
        'Development Status :: 5 - Production/Stable',
        'Environment :: No Input/Output (Daemon)',
        'Framework :: ZODB',
        'Framework :: Zope :: 3',
        'Framework :: Zope :: 5',
        'Intended Audience :: Developers',
        'Operating System :: POSIX',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3 :: Only',
        'Programming Language :: Python :: 3.10',
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.12',
        'Programming Language :: Python :: 3.13',
        'Programming Language :: Python :: Implementation :: CPython',
        'Topic :: Database',
    ],
    packages=find_namespace_packages('src', include=['gocept.*']),
    package_dir={'': 'src'},
    include_package_data=True,
    package_data={'gocept.runner': ['*.rst', '*.zcml', '*.xml', '*.conf']},
    zip_safe=False,
    python_requires='>=3.10',
    install_requires=[
        # The cron expressions of schedules (gocept.runner.jobs.periodic):
        # a small, pure-Python library that reads them and finds the times
        # that match, where a parser of our own would be one more to trust.
        'croniter',
        'transaction',
        'ZConfig',
        'ZODB',
        'zope.app.appsetup',
        'zope.authentication',
        'zope.component',
        'zope.exceptions',
        'zope.principalregistry',
        'zope.publisher',
        'zope.security',
    ],
    extras_require={
        'test': [
            'opentelemetry-api',
            'opentelemetry-exporter-otlp-proto-http',
            'opentelemetry-sdk',
            'prometheus_client',
            'psycopg2-binary',
            'RelStorage',
            'sentry-sdk >= 2',
            'ZEO',
            'zope.testrunner',
        ],
        'zeo': [
            'ZEO',
        ],
        # Runners on a Zope 4+ instance (gocept.runner.zopeapp).
        'zope': [
            'Zope >= 5',
        ],
        # The tests on a Plone 6 site (PloneSiteLayer).  Without Plone's own
        # version pins pip takes the pre-release plone.app.layout 7, whose
        # ZCML fails to load in Plone 6.
        'plone': [
            'Plone',
            'plone.api',
            'plone.app.layout < 7',
        ],
        # RelStorage drives PostgreSQL with psycopg2 (4.3 has no driver for
        # psycopg 3); psycopg2-binary is psycopg2 with wheels.  Not
        # RelStorage[postgresql]: that asks for psycopg2, built from source.
        'relstorage': [
            'psycopg2-binary',
            'RelStorage',
        ],
        # Prometheus metrics (gocept.runner.metrics).
        'metrics': [
            'prometheus_client',
        ],
        # Traces of ticks and jobs (gocept.runner.tracing): the API, the
        # SDK that OTEL_TRACES_EXPORTER configures, and its 'otlp'
        # exporter (OTLP over HTTP, which needs no gRPC).
        'opentelemetry': [
            'opentelemetry-api',
            'opentelemetry-exporter-otlp-proto-http',
            'opentelemetry-sdk',
        ],
        # Reporting to Sentry (gocept.runner.sentry).
        'sentry': [
            'sentry-sdk >= 2',
        ],
        'benchmarks': [
            'matplotlib',
        ],
        # The documentation: Sphinx with its theme and the generator of the
        # command line reference (tox -e docs).
        'docs': [
            'furo',
            'Sphinx >= 9',
            'sphinx-argparse',
        ],
    },
    entry_points={
        'console_scripts': [
            'gocept-runner = gocept.runner.cli:script',
            'gocept-jobs = gocept.runner.jobs.command:script',
            'runexample = gocept.runner.example:main',
        ],
    },
)
