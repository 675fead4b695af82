"""``python -m gocept.runner.jobs``: the gocept-jobs command."""

from gocept.runner.jobs.command import script


script(prog='python -m gocept.runner.jobs')
