"""Committing after every item of a batch."""

import functools
import logging

import transaction
from ZODB.POSException import ConflictError


log = logging.getLogger(__name__)


def transaction_per_item(generator_function):
    """Decorate a generator function that yields callables.

    Each callable is called and its work committed on its own.  An item that
    fails (or whose commit conflicts) is aborted and logged, and the next one
    runs.  Arguments are passed through to the generator function.
    """
    @functools.wraps(generator_function)
    def run(*args, **kw):
        for item in generator_function(*args, **kw):
            try:
                item()
                transaction.commit()
            except ConflictError as e:
                transaction.abort()
                log.warning('Conflict in %r, transaction aborted: %s',
                            item, e)
            except Exception:
                transaction.abort()
                log.exception('Error in %r, transaction aborted', item)
    return run
