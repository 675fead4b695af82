"""Workers that misbehave, for test_faults_loop, which runs them as programs.

They take their orders from environment variables and tell the test what
they did by appending lines to the file ``report`` in $FAULT_DIR:

FAULT_GATE
    ``import``, ``zcml``, ``opened``, ``tick`` or ``close``: at that point
    of the run, create the file ``at-<point>`` in $FAULT_DIR and wait until
    the test removes it (it sends its signals meanwhile).
FAULT_RESULT
    The Python expression whose value the worker `result` returns.
FAULT_RAISE
    ``GeneratorExit`` or ``custom``: what the worker `raises` raises.
FAULT_FORK, FAULT_CHILD
    ``os`` or ``multiprocessing``; ``exit``, ``return`` or ``error``: how
    the worker `fork` forks, and how its child ends.
FAULT_FORK_AT
    ``opened``: fork in the subscriber to DatabaseOpened, too.
FAULT_OPENED_FAILS
    A number: the subscriber to DatabaseOpened raises AttributeError that
    many times (as one does that meets a root folder another runner is
    creating), then does nothing.
"""

import decimal
import fractions
import math
import multiprocessing
import os
import signal
import sys
import time

import transaction
import zope.component
import zope.component.hooks
import zope.component.interfaces
import zope.interface
import zope.security.management

import gocept.runner


def report(line):
    with open(os.path.join(os.environ['FAULT_DIR'], 'report'), 'a') as f:
        f.write(f'{line}\n')


def gate(point):
    """Wait at `point` while the test holds it (see FAULT_GATE)."""
    if os.environ.get('FAULT_GATE') != point:
        return
    path = os.path.join(os.environ['FAULT_DIR'], f'at-{point}')
    with open(path, 'w'):
        pass
    deadline = time.monotonic() + 30
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)


# Importing the worker's module is part of the start-up.
gate('import')


def zcml_gate():
    """A utility factory, called while the site ZCML is executed."""
    gate('zcml')
    return object()


def opened(event):
    """A subscriber to DatabaseOpened; forks if $FAULT_FORK_AT is
    ``opened``."""
    gate('opened')
    if os.environ.get('FAULT_FORK_AT') == 'opened':
        _fork()
    global _failures
    if _failures < int(os.environ.get('FAULT_OPENED_FAILS', 0)):
        _failures += 1
        report(f'opened fails {_failures}')
        raise AttributeError(
            "'NoneType' object has no attribute 'getSiteManager'")


_failures = 0


def closing(event):
    """A subscriber to IUnregistered: the database is about to be closed."""
    if getattr(event.object, 'name', None) != '':
        return
    handler = signal.getsignal(signal.SIGTERM)
    report(f'closing in {os.getpid()} with the runner\'s handlers:'
           f' {handler not in (signal.SIG_DFL, signal.SIG_IGN, None)}')
    gate('close')


def root():
    return zope.component.hooks.getSite()._p_jar.root()


def _count():
    """Add 1 to root['count']; report ``committed N`` after the commit."""
    count = root()['count'] = root().get('count', 0) + 1
    transaction.get().addAfterCommitHook(
        lambda ok: ok and report(f'committed {count}'))
    return count


def count():
    """Count the ticks in the database."""
    _count()


def hold():
    """Count, waiting at the gate ``tick`` first."""
    gate('tick')
    _count()


@gocept.runner.once()
def count_once():
    """Count once (a decorated worker, called with site and zope.conf)."""
    _count()


@gocept.runner.appmain(ticks=0.01)
def count_loop():
    """Count until stopped (a decorated worker, run as a program)."""
    _count()


def result():
    """Count, then return $FAULT_RESULT, in which `n` is the tick's number
    (Exit in tick $FAULT_TICKS, 3 if not set)."""
    number = _count()
    report(f'tick {number} at {time.monotonic()}')
    if number == int(os.environ.get('FAULT_TICKS', 3)):
        return gocept.runner.Exit
    return eval(os.environ['FAULT_RESULT'], {
        'Decimal': decimal.Decimal, 'Fraction': fractions.Fraction,
        'math': math, 'n': number})


class CustomBaseException(BaseException):
    """Not an Exception, nor SystemExit or KeyboardInterrupt."""


# The ticks the worker `raises` has run.
_raised = []


def raises():
    """Count; raise $FAULT_RAISE in the first tick, Exit in the third."""
    _count()
    _raised.append(1)
    number = len(_raised)
    if number == 1:
        if os.environ['FAULT_RAISE'] == 'GeneratorExit':
            raise GeneratorExit
        raise CustomBaseException('a custom BaseException')
    if number == 3:
        return gocept.runner.Exit


def doom():
    """Count, then doom the transaction."""
    _count()
    transaction.doom()


@zope.interface.implementer(zope.component.interfaces.ISite)
class OtherSite:
    """A site that is not the loop's."""

    def getSiteManager(self):
        return zope.component.getGlobalSiteManager()


class Participation:
    principal = None
    interaction = None


def meddle():
    """Report site and interaction; leave others behind; Exit in tick 4."""
    number = _count()
    interaction = zope.security.management.queryInteraction()
    principals = (None if interaction is None else
                  [p.principal and p.principal.id
                   for p in interaction.participations])
    site = zope.component.hooks.getSite()
    report(f'tick {number}: site {type(site).__name__}'
           f' {getattr(site, "_p_oid", None)!r}, interaction {principals}')
    if number == 1:
        zope.component.hooks.setSite(None)
    elif number == 2:
        zope.component.hooks.setSite(OtherSite())
    elif number == 3:
        # Another interaction, with no principal, left open.
        zope.security.management.endInteraction()
        zope.security.management.newInteraction(Participation())
    else:
        return gocept.runner.Exit


def _child(how):
    report(f'child {os.getpid()}')
    if how == 'exit':
        sys.exit(7)
    if how == 'error':
        raise ValueError('the child failed')


def _fork():
    """Fork a child that ends as $FAULT_CHILD says; wait for it to end.

    The child of os.fork returns (True) unless it ends here.
    """
    report(f'parent {os.getpid()}')
    how = os.environ['FAULT_CHILD']
    if os.environ['FAULT_FORK'] == 'multiprocessing':
        process = multiprocessing.get_context('fork').Process(
            target=_child, args=(how,))
        process.start()
        process.join()
        status = process.exitcode
    else:
        pid = os.fork()
        if pid == 0:
            _child(how)
            return True
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    report(f'child exited {status}')
    return False


def fork():
    """Count; in the first tick fork (see _fork)."""
    if _count() == 1:
        _fork()
