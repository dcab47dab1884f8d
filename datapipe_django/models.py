"""The app's one model: documents whose search-index update failed, kept for re-indexing."""

from __future__ import annotations

from django.db import models

__all__ = ["PendingIndex"]


class PendingIndex(models.Model):
    """A row whose search document could not be written (the engine was down, or rejected it).

    Written by :mod:`datapipe_django.search.sync` in the database the row itself was written
    to, at most once per (Document, pk); ``manage.py datapipe_index pending`` (and ``rebuild``)
    re-index these rows from that database and delete the records. The record says only
    *which* row: the re-index reads the row as it is then, and deletes the document when the
    row is gone.
    """

    document = models.CharField(max_length=200, help_text="The Document's dotted path.")
    object_pk = models.CharField(max_length=100)
    reason = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "pending search index update"
        constraints = [
            models.UniqueConstraint(fields=["document", "object_pk"],
                                    name="datapipe_pendingindex_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.document} #{self.object_pk}"
