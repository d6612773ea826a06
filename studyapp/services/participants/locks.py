"""The one row lock the participant services queue on (a study's, a condition's, a participant's row)."""

from django.db.models import Model


def row_lock(*, model: type[Model], pk: int) -> None:
    """Lock one row until the transaction ends, so that callers doing a read-then-write on what it stands for take
    turns. FOR NO KEY UPDATE on PostgreSQL: inserts that reference the row (a new participant of the study, a
    trial of the condition) need not wait for it. SQLite ignores it; its IMMEDIATE transactions let one writer in
    at a time anyway."""
    list(model.objects.select_for_update(no_key=True).filter(pk=pk).values_list("pk"))
