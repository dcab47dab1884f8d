"""What the ledger records for a payout: its transaction (amount, fee, tax, settlement)."""

from __future__ import annotations

from typing import Any

__all__ = ["FEES", "GST", "transaction_for"]

#: Fee per payout by transfer mode, in paise (before tax).
FEES = {"NEFT": 300, "IMPS": 500, "RTGS": 2000, "UPI": 300}
#: Tax on the fee (18% GST).
GST = 0.18

_STATUS = {"processed": "settled", "reversed": "reversed", "failed": "failed",
           "cancelled": "void"}


def transaction_for(payout: Any) -> dict[str, Any]:
    """The ledger transaction of ``payout`` (any object with the Payout fields)."""
    fee = FEES.get(payout.mode, 300)
    settled_at = payout.processed_at if payout.status == "processed" else None
    return {
        "id": payout.transaction_id,
        "merchant_id": payout.merchant_id,
        "payout_id": payout.pk,
        "amount": payout.amount,
        "fee": fee,
        "tax": round(fee * GST),
        "currency": payout.currency,
        "status": _STATUS.get(payout.status, "pending"),
        "settled_at": settled_at.isoformat() if settled_at is not None else None,
    }
