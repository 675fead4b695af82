"""Ticks that run as a principal: the security interaction of a tick."""

import zope.authentication.interfaces
import zope.component
import zope.publisher.base
import zope.security.management

from gocept.runner.interfaces import ConfigurationError


# zope.security keeps the interaction of each thread, and the one ended last
# (for restoreInteraction), in this threading.local.  queryInteraction() and
# endInteraction() find that there is none by raising and catching
# AttributeError: 4.5 µs of an empty tick of 24 µs without a principal
# (benchmarks/profile_ticks.py).  Looking into the thread's dictionary tells
# the same without an exception.
_local = getattr(zope.security.management, 'thread_local', None)


class RunnerRequest(zope.publisher.base.BaseRequest):
    """The participation of a tick that runs as a principal.

    A request, as in gocept.runner 3.x (with 3.x's name and signature):
    code that takes the interaction's participation for the request (view
    lookups, i18n) works in a tick.
    """

    def __init__(self, *args):
        super().__init__(None, {}, positional=args)


def lookup_principal(principal_id):
    """The principal object of `principal_id` (or of what it returns, if it
    is callable), or None.

    Raises ConfigurationError if the site ZCML registers no authentication
    utility, or if it does not know the principal.
    """
    if callable(principal_id):
        principal_id = principal_id()
    if principal_id is None:
        return None
    auth = zope.component.queryUtility(
        zope.authentication.interfaces.IAuthentication)
    if auth is None:
        raise ConfigurationError(
            f'Cannot look up the principal {principal_id!r}: the site'
            ' ZCML registers no IAuthentication utility (include'
            ' zope.principalregistry)')
    try:
        return auth.getPrincipal(principal_id)
    except zope.authentication.interfaces.PrincipalLookupError:
        raise ConfigurationError(
            f'Unknown principal {principal_id!r}') from None


def state():
    """zope.security's record of the calling thread's interactions: a
    dictionary that is empty while the thread has no interaction, and no
    ended one, or None where that is not known.

    It stays the same dictionary for the thread's life: a loop keeps it,
    and calls neither `begin` without a principal nor `end` while it is
    empty, which would do nothing.
    """
    return None if _local is None else _local.__dict__


def begin(principal):
    """Begin the interaction of a tick that runs as `principal` (a
    principal object; None: no interaction).

    Return whether an interaction was left open (by the worker of the tick
    before, say): it is ended first.
    """
    if _local is None:
        left_open = zope.security.management.queryInteraction() is not None
    else:
        left_open = _local.__dict__.get('interaction') is not None
    if left_open:
        end()
    if principal is not None:
        request = RunnerRequest()
        request.setPrincipal(principal)
        zope.security.management.newInteraction(request)
    return left_open


def end():
    """End the interaction of a tick, if there is one."""
    if _local is None or _local.__dict__:  # else endInteraction() does nothing
        zope.security.management.endInteraction()


class Interactions:
    """The security interactions of the ticks of one loop.

    Each tick runs in an interaction of `principal`, the principal of
    `principal_id` (an id, a callable giving one, or None: no interaction)
    as `find` finds it (lookup_principal, unless told otherwise).  `start`
    and `stop` are called in the loop's thread, around its ticks.
    """

    def __init__(self, principal_id, find=lookup_principal):
        self.principal_id, self.find = principal_id, find
        self.principal = None  # until found
        self._state = None  # state() of the loop's thread, while it runs

    def find_principal(self):
        """The principal, found now if it was not found yet."""
        if self.principal is None and self.principal_id is not None:
            self.principal = self.find(self.principal_id)
        return self.principal

    def start(self):
        """Find the principal again: ConfigurationError if it is
        unknown."""
        self.principal = None
        self.find_principal()
        self._state = state()

    def stop(self):
        self._state = None

    def begin(self):
        """Begin the interaction of a tick; return whether one was left
        open (see `begin`)."""
        principal = self.principal
        if principal is None:
            if self.principal_id is not None:
                principal = self.find_principal()
            elif self._state is not None and not self._state:
                return False  # nothing to end, nothing to begin
        return begin(principal)

    def act_as(self, principal_id):
        """Run the rest of the tick as the principal of `principal_id`
        (None: as `principal`); return that principal."""
        principal = (self.principal if principal_id is None
                     else self.find(principal_id))
        begin(principal)
        return principal

    def end(self):
        """End the interaction of a tick, if there is one."""
        if self._state is None or self._state:
            end()
