"""Empty ticks floor: begin and commit on an open connection, COUNT times,
each in a security interaction when a principal is given."""

import sys

import transaction
import zope.authentication.interfaces
import zope.component
import zope.interface
import zope.security.interfaces
import zope.security.management

import benchlib


@zope.interface.implementer(zope.security.interfaces.IParticipation)
class Participation:

    interaction = None

    def __init__(self, principal):
        self.principal = principal


zope_conf, count = sys.argv[1], int(sys.argv[2])
principal = sys.argv[3] if len(sys.argv) > 3 else None
db = benchlib.open_floor(zope_conf)
connection = db.open()
seen = None
start = benchlib.now()
if principal is None:
    for i in range(count):
        transaction.begin()
        transaction.commit()
else:
    auth = zope.component.getUtility(
        zope.authentication.interfaces.IAuthentication)
    principal = auth.getPrincipal(principal)
    for i in range(count):
        transaction.begin()
        zope.security.management.newInteraction(Participation(principal))
        transaction.commit()
        zope.security.management.endInteraction()
    seen = principal.id
benchlib.report(ticks=count, seconds=benchlib.now() - start, principal=seen)
connection.close()
db.close()
benchlib.report(done=count)
