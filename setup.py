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
        read('src', 'gocept', 'runner', 'appmain.rst'),
        read('src', 'gocept', 'runner', 'mainloop.rst'),
        read('src', 'gocept', 'runner', 'once.rst'),
        read('src', 'gocept', 'runner', 'transaction.rst'),
        read('CHANGES.rst'),
    ]),
    long_description_content_type='text/x-rst',
    keywords='zope zodb runner cron daemon',
    license='ZPL-2.1',
    url='https://github.com/gocept/gocept.runner',
    classifiers=[
        'Development Status :: 5 - Production/Stable',
        'Framework :: ZODB',
        'Framework :: Zope :: 3',
        'Intended Audience :: Developers',
        'License :: OSI Approved :: Zope Public License',
        'Operating System :: POSIX',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3 :: Only',
        'Programming Language :: Python :: 3.10',
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.12',
        'Programming Language :: Python :: 3.13',
        'Programming Language :: Python :: Implementation :: CPython',
    ],
    packages=find_namespace_packages('src', include=['gocept.*']),
    package_dir={'': 'src'},
    include_package_data=True,
    package_data={'gocept.runner': ['*.rst', '*.zcml', '*.xml', '*.conf']},
    zip_safe=False,
    python_requires='>=3.10',
    install_requires=[
        'transaction',
        'ZConfig',
        'ZODB',
        'zope.app.appsetup',
        'zope.authentication',
        'zope.component',
        'zope.exceptions',
        'zope.interface',
        'zope.principalregistry',
        'zope.security',
    ],
    extras_require={
        'test': [
            'zope.testrunner',
        ],
        'benchmarks': [
            'matplotlib',
        ],
    },
    entry_points={
        'console_scripts': [
            'runexample = gocept.runner.example:main',
        ],
    },
)
