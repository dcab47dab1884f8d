from __future__ import annotations

from rest_framework import serializers

from datapipe_django.rest import ExpandableField
from tests.testapp.models import Category, Item, Owner


class CategorySerializer(serializers.ModelSerializer):
    class Meta:
        model = Category
        fields = ("id", "name")


class OwnerSerializer(serializers.ModelSerializer):
    class Meta:
        model = Owner
        fields = ("id", "name", "email")


class ItemSerializer(serializers.ModelSerializer):
    owner = ExpandableField(OwnerSerializer)
    category = ExpandableField(CategorySerializer)

    class Meta:
        model = Item
        fields = ("id", "tenant", "name", "status", "amount", "active", "created_at", "day",
                  "score", "category", "owner")
