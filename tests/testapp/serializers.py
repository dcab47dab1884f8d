from __future__ import annotations

from rest_framework import serializers

from datapipe_django.rest import ExpandableField
from tests.testapp.models import Category, Comment, Item, Owner, Tag


class CategorySerializer(serializers.ModelSerializer):
    class Meta:
        model = Category
        fields = ("id", "name")


class OwnerSerializer(serializers.ModelSerializer):
    class Meta:
        model = Owner
        fields = ("id", "name", "email")


class TagSerializer(serializers.ModelSerializer):
    class Meta:
        model = Tag
        fields = ("id", "name")


class CommentSerializer(serializers.ModelSerializer):
    author = ExpandableField(OwnerSerializer)

    class Meta:
        model = Comment
        fields = ("id", "body", "author")


class ItemSerializer(serializers.ModelSerializer):
    owner = ExpandableField(OwnerSerializer)
    category = ExpandableField(CategorySerializer)

    class Meta:
        model = Item
        fields = ("id", "tenant", "name", "status", "amount", "active", "created_at", "day",
                  "score", "category", "owner")
