"""The modules of gocept.runner import each other without a circle, also
counting the imports inside functions (which the import graph at start-up
does not show), and import each other inside a function only to spare the
start-up of every runner a cost."""

import ast
import glob
import os
import unittest

import gocept.runner


PACKAGE = 'gocept.runner'
HERE = os.path.dirname(gocept.runner.__file__)

# The imports of a module of the package inside a function of another, and
# why: gocept.runner.metrics imports prometheus_client, which only a run
# with metrics needs; gocept.runner.sentry imports sentry_sdk, which only
# a run that reports to Sentry needs (and may not have); gocept.runner.zopeapp
# imports Zope, which only a run on a Zope 4+ instance needs (and has).
LAZY = {
    ('gocept.runner.arguments', 'gocept.runner.metrics'),
    ('gocept.runner.assembly', 'gocept.runner.metrics'),
    ('gocept.runner.assembly', 'gocept.runner.sentry'),
    ('gocept.runner.environment', 'gocept.runner.zopeapp'),
}


def module_name(path):
    name = os.path.splitext(os.path.basename(path))[0]
    return PACKAGE if name == '__init__' else f'{PACKAGE}.{name}'


def imported(tree, modules):
    """The modules of `modules` that the module of `tree` imports,
    wherever in it.  (Importing a module of the package imports the
    package first, as it always does: that is not counted.)"""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            for alias in node.names:
                # from gocept.runner import status: a module; from
                # gocept.runner import appmain: a name of the package.
                module = f'{node.module}.{alias.name}'
                names.add(module if module in modules else node.module)
    return {name for name in names if name in modules}


def import_graph(functions_only=False):
    """Each module of the package (not its tests) and the modules of the
    package it imports (`functions_only`: inside its functions)."""
    paths = glob.glob(os.path.join(HERE, '*.py'))
    modules = {module_name(path): path for path in paths}
    graph = {}
    for name, path in modules.items():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        parts = [tree]
        if functions_only:
            parts = [node for node in ast.walk(tree) if isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef))]
        graph[name] = set().union(
            *(imported(part, modules) for part in parts)) - {name}
    return graph


def circle(graph):
    """A circle of imports in `graph`, as a list of modules, or None."""
    done = set()

    def visit(name, path):
        if name in path:
            return path[path.index(name):] + [name]
        if name in done:
            return None
        for other in sorted(graph[name]):
            found = visit(other, path + [name])
            if found:
                return found
        done.add(name)
        return None

    for name in sorted(graph):
        found = visit(name, [])
        if found:
            return found
    return None


class ImportGraphTest(unittest.TestCase):

    def test_the_modules_import_each_other_without_a_circle(self):
        graph = import_graph()
        self.assertIn(f'{PACKAGE}.programs', graph[f'{PACKAGE}.decorators'])
        self.assertIsNone(circle(graph))

    def test_imports_inside_functions_only_spare_the_start_up(self):
        lazy = {(name, other)
                for name, others in import_graph(functions_only=True).items()
                for other in others}
        self.assertEqual(set(), lazy - LAZY)

    def test_a_circle_is_found(self):
        self.assertEqual(['b', 'c', 'b'],
                         circle({'a': {'b'}, 'b': {'c'}, 'c': {'b'}}))
        self.assertIsNone(circle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}))
