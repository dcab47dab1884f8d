"""The payouts domain: merchants pay their contacts' fund accounts.

The same rows live in several databases with the same ids (the primary keeps the recent
payouts, the archive keeps them all), so the foreign keys *from* ``Payout`` carry no database
constraint (``db_constraint=False``): an archived payout must not need its merchant, user or
fund account row to exist under a constraint, and rows are copied between stores by id.
Amounts are integers in the currency's minor unit (paise for INR).
"""

from __future__ import annotations

from django.db import models


class Merchant(models.Model):
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class MerchantUser(models.Model):
    """A person on the merchant's team (who created a payout); not Django's auth user."""

    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="users")
    name = models.CharField(max_length=100)
    email = models.EmailField()

    def __str__(self) -> str:
        return self.name


class Contact(models.Model):
    class Type(models.TextChoices):
        VENDOR = "vendor"
        EMPLOYEE = "employee"
        CUSTOMER = "customer"
        SELF = "self"

    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="contacts")
    name = models.CharField(max_length=100)
    email = models.EmailField(blank=True)
    type = models.CharField(max_length=20, choices=Type.choices)

    def __str__(self) -> str:
        return self.name


class FundAccount(models.Model):
    """Where a payout goes: a bank account or a UPI address (VPA). Details are masked."""

    class AccountType(models.TextChoices):
        BANK_ACCOUNT = "bank_account", "Bank account"
        VPA = "vpa", "UPI address (VPA)"

    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE,
                                 related_name="fund_accounts")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="fund_accounts")
    account_type = models.CharField(max_length=20, choices=AccountType.choices)
    details = models.CharField(max_length=100, help_text="Masked: IFSC and last digits, or VPA.")

    def __str__(self) -> str:
        return f"{self.get_account_type_display()} {self.details}"


class Payout(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        PENDING = "pending"
        PROCESSING = "processing"
        PROCESSED = "processed"
        REVERSED = "reversed"
        CANCELLED = "cancelled"
        FAILED = "failed"

    class Mode(models.TextChoices):
        NEFT = "NEFT", "NEFT"
        RTGS = "RTGS", "RTGS"
        IMPS = "IMPS", "IMPS"
        UPI = "UPI", "UPI"

    id = models.BigAutoField(primary_key=True)
    # The tenant: every pipeline source filters by merchant_id.
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, db_constraint=False,
                                 related_name="payouts")
    user = models.ForeignKey(MerchantUser, on_delete=models.PROTECT, db_constraint=False,
                             related_name="payouts")
    fund_account = models.ForeignKey(FundAccount, on_delete=models.PROTECT,
                                     db_constraint=False, related_name="payouts")
    amount = models.PositiveBigIntegerField(help_text="In the currency's minor unit (paise).")
    currency = models.CharField(max_length=3, default="INR")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    mode = models.CharField(max_length=4, choices=Mode.choices)
    purpose = models.CharField(max_length=40)
    reference_id = models.CharField(max_length=40, blank=True)
    narration = models.CharField(max_length=60, blank=True)
    utr = models.CharField(max_length=32, null=True, blank=True,
                           help_text="Bank reference, once the bank has processed it.")
    # Kept in the ledger service, not in this database (enriched over HTTP later).
    transaction_id = models.CharField(max_length=32, null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The pipeline's ordering ("-created_at", "-id") within one merchant.
            models.Index(fields=["merchant", "-created_at", "-id"]),
            models.Index(fields=["merchant", "status", "-created_at", "-id"]),
        ]

    def __str__(self) -> str:
        return f"Payout {self.pk}"
