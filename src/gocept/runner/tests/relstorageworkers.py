"""Workers that the RelStorage tests run in subprocesses."""

import zope.component.hooks


def started():
    """Say that the runner started, on its site (the root folder)."""
    site = zope.component.hooks.getSite()
    print('started on', type(site).__name__, flush=True)
