"""`flush` that works with frozen studies: the database refuses to delete an open study's rows
(studyapp/frozen.py), and emptying the whole database is the one write that changes no study, it
removes them all. So the triggers are dropped for the flush and recreated after it, in one transaction.
Django's test cases flush through this command after every transactional test (docs/testing.md)."""

from django.core.management.commands import flush
from django.db import connections, transaction

from studyapp.frozen import triggers_lifted


class Command(flush.Command):
    help = flush.Command.help + " Frozen-study triggers are lifted for the flush and put back after it."

    def handle(self, **options):
        database = options["database"]
        # One transaction: if the flush fails, the triggers are back as they were.
        with transaction.atomic(using=database), triggers_lifted(connections[database]):
            super().handle(**options)
