import logging

from mypkg.jobs import database_root

import gocept.runner
from gocept.runner.jobs import job


log = logging.getLogger(__name__)


@job(retries=1, retry_pause=0.5)
def export(path):
    """Write the count into the file `path`."""
    count = database_root().get('count', 0)
    with open(path, 'w') as f:
        f.write(f'{count}\n')


@gocept.runner.once()
def order_export():
    """Put a job that exports the count, as a view of your application
    would for a user who asked for it."""
    job_id = export.delay('exports/count.txt')
    log.info('Job %s will export the count', job_id)
