"""Programs with a batch of items, run by test_peritem_conflicts."""

import gocept.runner


@gocept.runner.transaction_per_item
def documents(broken):
    for number in range(4):
        def index(number=number):
            if number in broken:
                raise ValueError(f'document {number} is broken')
        yield f'document {number}', index


@gocept.runner.once()
def failing_batch():
    """Index four documents, of which the third fails."""
    documents({2})


@gocept.runner.once()
def good_batch():
    """Index four documents."""
    documents(())
