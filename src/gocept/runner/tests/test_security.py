"""Ticks that run as a principal: looking it up, the interaction of a
tick."""

import unittest

import zope.authentication.interfaces
import zope.component
import zope.component.hooks
import zope.interface.registry
import zope.principalregistry.principalregistry
import zope.security.management

from gocept.runner import security
from gocept.runner.config import ConfigurationError
from gocept.runner.security import RunnerRequest


class Site:
    """A site whose registry is `registry` and nothing else."""

    def __init__(self, registry):
        self.registry = registry

    def getSiteManager(self):
        return self.registry


class SecurityTest(unittest.TestCase):

    def setUp(self):
        # The lookups go to the site's registry, not to the global one,
        # which a site ZCML that another test loaded may have filled.
        if zope.component.getSiteManager.implementation is not (
                zope.component.hooks.getSiteManager):
            zope.component.hooks.setHooks()
            self.addCleanup(zope.component.hooks.resetHooks)
        self.registry = zope.interface.registry.Components('test')
        self.addCleanup(zope.component.hooks.setSite,
                        zope.component.hooks.getSite())
        zope.component.hooks.setSite(Site(self.registry))
        self.addCleanup(zope.security.management.endInteraction)

    def principals(self):
        """Register a principal registry that knows zope.mgr."""
        principals = zope.principalregistry.principalregistry.\
            PrincipalRegistry()
        principals.definePrincipal('zope.mgr', 'Manager')
        self.registry.registerUtility(
            principals, zope.authentication.interfaces.IAuthentication)
        return principals

    def participations(self):
        interaction = zope.security.management.queryInteraction()
        return None if interaction is None else list(
            interaction.participations)


class LookupTest(SecurityTest):

    def test_no_principal(self):
        self.assertIsNone(security.lookup_principal(None))
        self.assertIsNone(security.lookup_principal(lambda: None))

    def test_a_known_principal(self):
        self.principals()
        for principal_id in 'zope.mgr', lambda: 'zope.mgr':
            principal = security.lookup_principal(principal_id)
            self.assertEqual('zope.mgr', principal.id)

    def test_an_unknown_principal(self):
        self.principals()
        with self.assertRaises(ConfigurationError) as raised:
            security.lookup_principal('nobody')
        self.assertEqual("Unknown principal 'nobody'", str(raised.exception))
        self.assertTrue(raised.exception.__suppress_context__)

    def test_no_authentication_utility(self):
        with self.assertRaises(ConfigurationError) as raised:
            security.lookup_principal('zope.mgr')
        self.assertEqual(
            "Cannot look up the principal 'zope.mgr': the site ZCML"
            ' registers no IAuthentication utility (include'
            ' zope.principalregistry)', str(raised.exception))


class InteractionTest(SecurityTest):

    def test_without_a_principal_there_is_none(self):
        self.assertFalse(security.begin(None))
        self.assertIsNone(self.participations())

    def test_a_principal_has_an_interaction_with_a_request(self):
        principal = self.principals().getPrincipal('zope.mgr')
        self.assertFalse(security.begin(principal))
        [request] = self.participations()
        self.assertIsInstance(request, RunnerRequest)
        self.assertIs(principal, request.principal)
        security.end()
        self.assertIsNone(self.participations())
        security.end()

    def test_one_left_open_is_ended_first(self):
        principal = self.principals().getPrincipal('zope.mgr')
        zope.security.management.newInteraction()
        left = zope.security.management.getInteraction()
        self.assertTrue(security.begin(principal))
        self.assertIsNot(left, zope.security.management.getInteraction())
        self.assertTrue(security.begin(None))
        self.assertIsNone(self.participations())

    def test_the_request_has_the_signature_of_3x(self):
        self.assertEqual(('a', 'b'),
                         RunnerRequest('a', 'b').getPositionalArguments())
        self.assertEqual((), RunnerRequest().getPositionalArguments())


class InteractionsTest(SecurityTest):
    """The interactions of the ticks of one loop."""

    def test_the_principal_is_found_when_first_needed_and_kept(self):
        principals = self.principals()
        interactions = security.Interactions('zope.mgr')
        self.assertIsNone(interactions.principal)
        principal = interactions.find_principal()
        self.assertIs(principals.getPrincipal('zope.mgr'), principal)
        self.assertIs(principal, interactions.principal)

    def test_start_finds_it_again_and_fails_for_an_unknown_one(self):
        self.principals()
        interactions = security.Interactions('zope.mgr')
        interactions.principal = old = object()
        interactions.start()
        self.addCleanup(interactions.stop)
        self.assertIsNot(old, interactions.principal)
        with self.assertRaises(ConfigurationError):
            security.Interactions('nobody').start()

    def test_each_tick_in_an_interaction_of_the_principal(self):
        principal = self.principals().getPrincipal('zope.mgr')
        interactions = security.Interactions('zope.mgr')
        interactions.start()
        self.addCleanup(interactions.stop)
        for _ in range(2):
            self.assertFalse(interactions.begin())
            [request] = self.participations()
            self.assertIs(principal, request.principal)
            interactions.end()
            self.assertIsNone(self.participations())

    def test_without_a_principal_none_but_one_left_open_is_ended(self):
        interactions = security.Interactions(None)
        interactions.start()
        self.addCleanup(interactions.stop)
        self.assertFalse(interactions.begin())
        self.assertIsNone(self.participations())
        zope.security.management.newInteraction()
        self.assertTrue(interactions.begin())
        self.assertIsNone(self.participations())

    def test_acting_as_another_principal_for_the_rest_of_a_tick(self):
        principals = self.principals()
        principals.definePrincipal('zope.editor', 'Editor', login='editor')
        interactions = security.Interactions('zope.mgr')
        interactions.start()
        self.addCleanup(interactions.stop)
        interactions.begin()
        editor = interactions.act_as('zope.editor')
        self.assertEqual('zope.editor', editor.id)
        [request] = self.participations()
        self.assertIs(editor, request.principal)
        self.assertEqual('zope.mgr', interactions.act_as(None).id)
        with self.assertRaises(ConfigurationError):
            interactions.act_as('nobody')

    def test_a_finder_of_its_own(self):
        found = []
        interactions = security.Interactions(
            'alice', find=lambda principal_id: found.append(principal_id)
            or principal_id.upper())
        self.assertEqual('ALICE', interactions.find_principal())
        self.assertEqual('ALICE', interactions.find_principal())
        self.assertEqual(['alice'], found)
