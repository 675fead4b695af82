"""Ticks that run as a principal: the security interaction of a tick."""

import zope.authentication.interfaces
import zope.component
import zope.publisher.base
import zope.security.management

from gocept.runner.interfaces import ConfigurationError


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


def begin(principal):
    """Begin the interaction of a tick that runs as `principal` (a
    principal object; None: no interaction).

    Return whether an interaction was left open (by the worker of the tick
    before, say): it is ended first.
    """
    left_open = zope.security.management.queryInteraction() is not None
    if left_open:
        end()
    if principal is not None:
        request = RunnerRequest()
        request.setPrincipal(principal)
        zope.security.management.newInteraction(request)
    return left_open


def end():
    """End the interaction of a tick, if there is one."""
    zope.security.management.endInteraction()
