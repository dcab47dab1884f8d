"""``manage.py seed_demo``: fill every writable database alias with the same demo data.

* merchants, their users, contacts and fund accounts on every alias (the archive needs them too:
  an archived payout is enriched from the archive);
* payouts: the archive aliases (``DATAPIPE["ARCHIVES"]``) get all of them, the other aliases
  only those of the last 30 days (``pipelines.RETENTION``), with the same ids and values.

Replicas (``DATAPIPE["REPLICAS"]``, or a ``TEST: {"MIRROR": ...}`` alias) are read-only and
receive the primary's rows by replication, so they are skipped. Each alias is migrated first.

The data are a function of ``--seed``, ``--payouts``, ``--days`` and the current date (times
are counted back from today's midnight UTC). Running the command again replaces the demo
merchants' rows instead of adding to them; ``--flush`` first empties the payouts tables entirely.

When a search engine is configured (``settings.PAYOUTS_SEARCH``), the payouts index is rebuilt
from the archive at the end (``datapipe_index rebuild``); the rows written meanwhile are not
synced one by one.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import string
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.management.color import no_style
from django.db import connections, transaction
from django.db.models import Q
from django.utils import timezone

from datapipe_django import invalidate
from datapipe_django.conf import datapipe_settings
from datapipe_django.search.sync import paused as search_sync_paused
from example_project.payouts.models import Contact, FundAccount, Merchant, MerchantUser, Payout
from example_project.payouts.pipelines import RETENTION

MERCHANTS = (
    # id, name, short name, e-mail domain, share of the payouts
    (1, "Acme Retail Pvt Ltd", "Acme Retail", "acmeretail.in", 0.5),
    (2, "Bluefin Logistics LLP", "Bluefin", "bluefin.co.in", 0.3),
    (3, "Chai Point Cafes", "Chai Point", "chaipoint.example", 0.2),
)
FIRST_NAMES = ("Aarav", "Priya", "Rohan", "Ananya", "Vikram", "Meera", "Kabir", "Isha", "Arjun",
               "Diya", "Nikhil", "Sneha", "Rahul", "Kavya", "Aditya", "Pooja", "Siddharth",
               "Neha", "Karan", "Riya")
LAST_NAMES = ("Sharma", "Iyer", "Patel", "Reddy", "Gupta", "Nair", "Singh", "Menon", "Das",
              "Kulkarni", "Joshi", "Bose")
VENDORS = ("Sri Balaji Packaging", "Kaveri Cold Chain", "Metro Office Supplies",
           "Deccan Freight Movers", "Nilgiri Tea Traders", "Ganesh Printers",
           "Coastal Dairy Co-op", "Urban Cleaning Services")
BANKS = ("HDFC", "ICIC", "SBIN", "UTIB", "KKBK", "YESB")
PSPS = ("okhdfcbank", "okicici", "oksbi", "okaxis", "ybl", "paytm")
USERS_PER_MERCHANT = 3
CONTACT_TYPES = (("vendor", 4), ("employee", 3), ("customer", 2), ("self", 1))
PURPOSES = {"vendor": ("vendor bill",), "employee": ("salary", "reimbursement"),
            "customer": ("refund", "cashback"), "self": ("payout",)}
RTGS_MIN = 2_00_000 * 100  # RTGS is for ₹2 lakh and more (amounts are in paise)


@dataclass
class DemoData:
    merchants: list[Merchant]
    users: list[MerchantUser]
    contacts: list[Contact]
    fund_accounts: list[FundAccount]
    payouts: list[Payout]


def build(*, seed: int, payouts: int, days: int, now: dt.datetime) -> DemoData:
    """The demo rows (unsaved, with explicit ids): a function of the arguments only."""
    rng = random.Random(seed)
    merchants = [Merchant(id=mid, name=name) for mid, name, *_ in MERCHANTS]
    users: list[MerchantUser] = []
    contacts: list[Contact] = []
    fund_accounts: list[FundAccount] = []
    by_merchant: dict[int, dict[str, list[Any]]] = {}
    for mid, _name, short, domain, _share in MERCHANTS:
        mine: dict[str, list[Any]] = {"users": [], "accounts": []}
        for _ in range(USERS_PER_MERCHANT):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            user = MerchantUser(id=len(users) + 1, merchant_id=mid, name=f"{first} {last}",
                                email=f"{first}.{last}@{domain}".lower())
            users.append(user)
            mine["users"].append(user)
        vendors = rng.sample(VENDORS, k=4)
        for ctype, count in CONTACT_TYPES:
            for i in range(count):
                if ctype == "vendor":
                    name = vendors[i]
                    email = f"accounts@{name.split()[0].lower()}{rng.randint(10, 99)}.example"
                elif ctype == "self":
                    name, email = f"{short} current account", ""
                else:
                    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
                    name = f"{first} {last}"
                    host = domain if ctype == "employee" else "gmail.com"
                    email = f"{first}.{last}{rng.randint(1, 99)}@{host}".lower()
                contact = Contact(id=len(contacts) + 1, merchant_id=mid, name=name,
                                  email=email, type=ctype)
                contacts.append(contact)
                kinds = ["bank_account"]
                if ctype in ("employee", "customer") and rng.random() < 0.6:
                    kinds.append("vpa")
                for kind in kinds:
                    if kind == "bank_account":
                        details = (f"{rng.choice(BANKS)}0{rng.randint(0, 999_999):06d} · "
                                   f"XXXXXX{rng.randint(0, 9999):04d}")
                    else:
                        handle = name.split()[0].lower()
                        details = f"{handle[:2]}****@{rng.choice(PSPS)}"
                    account = FundAccount(id=len(fund_accounts) + 1, merchant_id=mid,
                                          contact_id=contact.id, account_type=kind,
                                          details=details)
                    fund_accounts.append(account)
                    mine["accounts"].append((account, contact))
        by_merchant[mid] = mine

    anchor = now.replace(hour=0, minute=0, second=0, microsecond=0)
    moments = sorted(anchor - dt.timedelta(seconds=rng.uniform(0, days * 86_400))
                     for _ in range(payouts))
    merchant_ids = [m[0] for m in MERCHANTS]
    shares = [m[4] for m in MERCHANTS]
    shorts = {m[0]: m[2] for m in MERCHANTS}
    rows = []
    for pk, created_at in enumerate(moments, start=1):
        mid = rng.choices(merchant_ids, weights=shares)[0]
        account, contact = rng.choice(by_merchant[mid]["accounts"])
        user = rng.choice(by_merchant[mid]["users"])
        purpose = rng.choice(PURPOSES[contact.type])
        rupees = min(max(rng.lognormvariate(math.log(4_000), 1.3), 100), 50_00_000)
        amount = int(rupees) * 100 + rng.choice((0, 0, 0, 50, rng.randint(1, 99)))
        if account.account_type == "vpa":
            mode = "UPI"
        elif amount >= RTGS_MIN:
            mode = rng.choice(("RTGS", "NEFT"))
        else:
            mode = rng.choice(("IMPS", "IMPS", "NEFT"))
        status = _status(rng, anchor - created_at)
        done = status in ("processed", "reversed")
        processed_at = created_at + dt.timedelta(seconds=rng.randint(20, 7_200)) if done else None
        rows.append(Payout(
            id=pk, merchant_id=mid, user_id=user.id, fund_account_id=account.id,
            amount=amount, currency="INR", status=status, mode=mode, purpose=purpose,
            reference_id=_reference(rng, purpose, created_at, contact.id),
            narration=f"{shorts[mid]} {purpose}",
            utr=_utr(rng, mode, account.details) if done else None,
            transaction_id=("txn_" + "".join(rng.choices(string.ascii_letters + string.digits,
                                                         k=14))) if done else None,
            created_at=created_at, processed_at=processed_at,
        ))
    return DemoData(merchants, users, contacts, fund_accounts, rows)


def _status(rng: random.Random, age: dt.timedelta) -> str:
    if age < dt.timedelta(days=1):
        return rng.choices(("queued", "pending", "processing", "processed", "failed"),
                           weights=(10, 5, 15, 65, 5))[0]
    return rng.choices(("processed", "reversed", "failed", "cancelled"),
                       weights=(85, 4, 5, 6))[0]


def _reference(rng: random.Random, purpose: str, created_at: dt.datetime, contact: int) -> str:
    if purpose == "vendor bill":
        return f"INV-{created_at:%Y}-{rng.randint(1, 99_999):05d}"
    if purpose == "salary":
        return f"SAL-{created_at:%Y%m}-{contact:03d}"
    if purpose in ("refund", "cashback"):
        return f"ORD-{rng.randint(1, 9_999_999):07d}"
    return ""


def _utr(rng: random.Random, mode: str, details: str) -> str:
    if mode in ("UPI", "IMPS"):
        return f"{rng.randint(10**11, 10**12 - 1)}"  # 12-digit RRN
    bank = details[:4] if details[:4] in BANKS else rng.choice(BANKS)
    return f"{bank}{mode[0]}{rng.randint(10**10, 10**11 - 1)}"


class Command(BaseCommand):
    help = ("Fill every writable database alias with the demo payouts: the archive with all "
            "of them, the application database with the last 30 days.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--payouts", type=int, default=2_000,
                            help="Payouts in total (default 2000).")
        parser.add_argument("--days", type=int, default=400,
                            help="How many days back the payouts go (default 400).")
        parser.add_argument("--seed", type=int, default=42, help="Random seed (default 42).")
        parser.add_argument("--flush", action="store_true",
                            help="Empty the payouts tables on every alias first (default: "
                                 "replace only the demo merchants' rows).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["payouts"] < 0 or options["days"] < 1:
            raise CommandError("--payouts must be >= 0 and --days >= 1.")
        now = timezone.now()
        data = build(seed=options["seed"], payouts=options["payouts"], days=options["days"],
                     now=now)
        archives = set(datapipe_settings.ARCHIVES)
        cutoff = data_cutoff(now)
        for alias in writable_aliases():
            call_command("migrate", database=alias, verbosity=0, interactive=False)
            payouts = (data.payouts if alias in archives
                       else [p for p in data.payouts if p.created_at >= cutoff])
            # The search index is rebuilt once at the end, not row by row as they are deleted.
            with search_sync_paused(), transaction.atomic(using=alias):
                self._clear(alias, data, everything=options["flush"])
                for rows in (data.merchants, data.users, data.contacts, data.fund_accounts,
                             payouts):
                    if rows:
                        type(rows[0]).objects.using(alias).bulk_create(rows, batch_size=500)
            _reset_sequences(alias)
            # bulk_create and queryset deletes of related rows send no signal per payout:
            # drop the cached pages of every merchant (CachedFetcher, payouts/pipelines.py).
            invalidate(Payout)
            scope = "all" if alias in archives else f"last {RETENTION.days} days"
            self.stdout.write(
                f"{alias}: {len(data.merchants)} merchants, {len(data.users)} users, "
                f"{len(data.contacts)} contacts, {len(data.fund_accounts)} fund accounts, "
                f"{len(payouts)} payouts ({scope})"
            )
        if getattr(settings, "PAYOUTS_SEARCH", False):
            self._index(sorted(archives & set(writable_aliases())) or ["default"])

    def _index(self, aliases: list[str]) -> None:
        """Rebuild the payouts search index from the archive (it holds every payout)."""
        from datapipe_django.search.documents import adapter_for
        from datapipe_django.search.indexing import rebuild
        from example_project.payouts.documents import PayoutDocument

        try:
            report = rebuild(PayoutDocument, using=aliases[0])
        except Exception as exc:
            reason = adapter_for(PayoutDocument).unavailable_reason(exc)
            if reason is None:
                raise
            self.stderr.write(f"search: not indexed, the engine is unavailable ({reason}); "
                              f"run `manage.py datapipe_index rebuild --database {aliases[0]}` "
                              f"once it is up. Until then q is answered by the databases.")
            return
        self.stdout.write(f"search: {report.indexed} payouts indexed from {aliases[0]!r} into "
                          f"{report.built!r} (searched as {report.index!r}) in "
                          f"{report.seconds:.1f}s")

    @staticmethod
    def _clear(alias: str, data: DemoData, *, everything: bool) -> None:
        merchant_ids = [m.id for m in data.merchants]
        for model, rows in ((Payout, data.payouts), (FundAccount, data.fund_accounts),
                            (Contact, data.contacts), (MerchantUser, data.users),
                            (Merchant, data.merchants)):
            qs = model._default_manager.using(alias).all()
            if not everything:
                owned = Q(pk__in=merchant_ids) if model is Merchant else Q(
                    merchant_id__in=merchant_ids)
                qs = qs.filter(owned | Q(pk__lte=len(rows)))
            qs.delete()


def data_cutoff(now: dt.datetime) -> dt.datetime:
    """The oldest ``created_at`` the application database keeps (today's midnight - RETENTION)."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0) - RETENTION


def writable_aliases() -> list[str]:
    """Every configured alias except read-only replicas."""
    replicas = set(datapipe_settings.REPLICAS)
    return [
        alias for alias, conf in connections.settings.items()
        if alias not in replicas and not conf.get("TEST", {}).get("MIRROR")
    ]


def _reset_sequences(alias: str) -> None:
    """Move auto-increment sequences past the explicit ids (PostgreSQL needs it)."""
    connection = connections[alias]
    statements = connection.ops.sequence_reset_sql(
        no_style(), [Merchant, MerchantUser, Contact, FundAccount, Payout])
    if statements:
        with connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)
