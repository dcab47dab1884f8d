"""Serializers of the payouts API. Relations render as ids unless the request expands them."""

from __future__ import annotations

from rest_framework import serializers

from datapipe_django.rest import ExpandableField
from example_project.payouts.models import Contact, FundAccount, MerchantUser, Payout


class MerchantUserSerializer(serializers.ModelSerializer):
    class Meta:
        model = MerchantUser
        fields = ("id", "name", "email")


class ContactSerializer(serializers.ModelSerializer):
    class Meta:
        model = Contact
        fields = ("id", "name", "email", "type")


class FundAccountSerializer(serializers.ModelSerializer):
    contact = ExpandableField(ContactSerializer)  # ?expand[]=fund_account.contact

    class Meta:
        model = FundAccount
        fields = ("id", "account_type", "details", "contact")


class PayoutSerializer(serializers.ModelSerializer):
    merchant_id = serializers.IntegerField(read_only=True)
    user = ExpandableField(MerchantUserSerializer)  # ?expand[]=user
    fund_account = ExpandableField(FundAccountSerializer)  # ?expand[]=fund_account

    class Meta:
        model = Payout
        fields = ("id", "merchant_id", "user", "fund_account", "amount", "currency", "status",
                  "mode", "purpose", "reference_id", "narration", "utr", "transaction_id",
                  "created_at", "processed_at")
        read_only_fields = fields
