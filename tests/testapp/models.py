"""Models the test suite runs pipelines over (created in every test database, no migrations)."""

from __future__ import annotations

from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.name


class Owner(models.Model):
    name = models.CharField(max_length=50)
    email = models.CharField(max_length=100, default="")

    def __str__(self) -> str:
        return self.name


class Tag(models.Model):
    name = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.name


class Item(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        PROCESSING = "processing"
        PROCESSED = "processed"
        REVERSED = "reversed"

    # Explicit primary keys: the same row lives in several databases with the same id.
    id = models.BigIntegerField(primary_key=True)
    tenant = models.CharField(max_length=20, db_index=True)
    name = models.CharField(max_length=50)
    status = models.CharField(max_length=20, choices=Status.choices)
    amount = models.IntegerField()
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField()
    day = models.DateField()
    score = models.IntegerField(null=True, blank=True)
    category = models.ForeignKey(Category, null=True, blank=True, on_delete=models.SET_NULL,
                                 db_constraint=False)
    owner = models.ForeignKey(Owner, null=True, blank=True, on_delete=models.SET_NULL,
                              db_constraint=False, related_name="items")
    tags = models.ManyToManyField(Tag, blank=True, related_name="items", db_constraint=False)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return f"Item {self.pk}"


class Comment(models.Model):
    """``item.comments`` (reverse FK), each with an ``author`` (nested: ``comments.author``)."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="comments",
                             db_constraint=False)
    author = models.ForeignKey(Owner, null=True, blank=True, on_delete=models.SET_NULL,
                               db_constraint=False, related_name="+")
    tenant = models.CharField(max_length=20, default="")
    body = models.CharField(max_length=100, default="")

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return f"Comment {self.pk}"


class ItemDetail(models.Model):
    """One-to-one with :class:`Item`: ``item.detail`` (reverse) and ``detail.item`` (forward)."""

    item = models.OneToOneField(Item, on_delete=models.CASCADE, related_name="detail",
                                db_constraint=False)
    note = models.CharField(max_length=100, default="")
    reviewer = models.ForeignKey(Owner, null=True, blank=True, on_delete=models.SET_NULL,
                                 db_constraint=False, related_name="+")

    def __str__(self) -> str:
        return f"Detail of item {self.item_id}"


class Node(models.Model):
    """A chain of nullable forward keys (``parent.parent``) and a NOT NULL key with no database
    constraint (``root``): what ``PrefetchEnricher(join=True)`` may and may not join."""

    name = models.CharField(max_length=50)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                               db_constraint=False, related_name="+")
    root = models.ForeignKey("self", on_delete=models.DO_NOTHING, db_constraint=False,
                             related_name="+")

    def __str__(self) -> str:
        return self.name
