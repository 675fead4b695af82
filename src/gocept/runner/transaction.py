"""gocept.runner 3.x's module of `transaction_per_item` (see peritem).

Its name is the one of the `transaction` distribution; imports of
``transaction`` stay absolute and find that distribution.
"""

if __name__ != 'gocept.runner.transaction':
    # This directory is on sys.path (a script was run from it): the
    # ``import transaction`` of ZODB and of this package would find this
    # module instead of the transaction distribution.
    raise ImportError(
        f'{__file__} was imported as {__name__!r}: do not put the'
        ' directory of the gocept.runner package on sys.path')

from gocept.runner.peritem import transaction_per_item  # noqa: E402


__all__ = ['transaction_per_item']
