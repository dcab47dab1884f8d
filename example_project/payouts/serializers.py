"""Serializers of the payouts API. Relations render as ids unless the request expands them;
some fields exist for private callers only (``Meta.field_auth_types``)."""

from __future__ import annotations

from rest_framework import serializers

from datapipe_django.rest import AuthTypeFieldsMixin, ExpandableField
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


class LedgerTransactionSerializer(serializers.Serializer):
    """A transaction as the ledger service answers it (a dict, not a model)."""

    id = serializers.CharField()
    amount = serializers.IntegerField(help_text="In paise.")
    fee = serializers.IntegerField(help_text="In paise, before tax.")
    tax = serializers.IntegerField(help_text="GST on the fee, in paise.")
    currency = serializers.CharField()
    status = serializers.CharField()
    settled_at = serializers.CharField(allow_null=True)


class PayoutSerializer(AuthTypeFieldsMixin, serializers.ModelSerializer):
    merchant_id = serializers.IntegerField(read_only=True)
    user = ExpandableField(MerchantUserSerializer)  # ?expand[]=user
    fund_account = ExpandableField(FundAccountSerializer)  # ?expand[]=fund_account
    # The transaction's id, or with ?expand[]=transaction the ledger's record of it.
    transaction = ExpandableField(LedgerTransactionSerializer, id_source="transaction_id")

    class Meta:
        model = Payout
        fields = ("id", "merchant_id", "user", "fund_account", "amount", "currency", "status",
                  "mode", "purpose", "reference_id", "narration", "utr", "transaction_id",
                  "transaction", "created_at", "processed_at")
        read_only_fields = fields
        # Where the money went (the fund account, expanded or not, and the bank's reference):
        # private callers only. A public caller's response has no such keys at all.
        field_auth_types = {"fund_account": {"private"}, "utr": {"private"}}
