"""The stored-event table, the same shape as the SQLAlchemy store's."""

from __future__ import annotations

from django.db import models


class StoredEvent(models.Model):
    id = models.BigAutoField(primary_key=True)
    originator_id = models.UUIDField()
    originator_version = models.BigIntegerField()
    topic = models.CharField(max_length=255)
    state = models.TextField()

    class Meta:
        db_table = "integer_sequenced_items"
        constraints = [
            models.UniqueConstraint(
                fields=["originator_id", "originator_version"], name="integer_sequenced_items_originator"
            )
        ]
