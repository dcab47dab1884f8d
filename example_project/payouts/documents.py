"""The payouts search index (django-elasticsearch-dsl), used when a search engine is
configured (``settings.PAYOUTS_SEARCH``: with ``DATAPIPE_EXAMPLE_DB=real``).

Mapped as docs/search.md recommends, so every filter of ``PayoutFilterSet``, the tenant, the
orderings and ``q`` are served exactly as the databases serve them:

* values filtered exactly (status, mode, currency, references) are ``keyword``;
* ``q`` searches ``narration``, ``purpose`` (analyzed ``text``, with a ``raw`` keyword) and
  ``reference_id`` (a keyword, with a ``text`` sub-field);
* datetimes are ``date_nanos`` (``date`` keeps milliseconds only, so rows created in the same
  millisecond would sort differently than in the database);
* the primary key is a field: the pages' last sort key;
* foreign keys are their ids, under the field's name.

``manage.py seed_demo`` (re)builds it from the archive, which holds every payout; after that
writes reach it when they commit (``ELASTICSEARCH_DSL_SIGNAL_PROCESSOR``, example settings).
``manage.py datapipe_index rebuild`` rebuilds it.
"""

from __future__ import annotations

from django.conf import settings
from django_elasticsearch_dsl import Document, fields
from django_elasticsearch_dsl.registries import registry

from datapipe_django.search.fields import DateNanosField
from example_project.payouts.models import Payout


@registry.register_document
class PayoutDocument(Document):
    id = fields.LongField()
    merchant_id = fields.LongField()  # the tenant
    user = fields.LongField(attr="user_id")
    fund_account = fields.LongField(attr="fund_account_id")
    amount = fields.LongField()
    currency = fields.KeywordField()
    status = fields.KeywordField()
    mode = fields.KeywordField()
    purpose = fields.TextField(fields={"raw": fields.KeywordField()})
    reference_id = fields.KeywordField(fields={"text": fields.TextField()})
    narration = fields.TextField(fields={"raw": fields.KeywordField()})
    utr = fields.KeywordField()
    transaction_id = fields.KeywordField()
    created_at = DateNanosField()
    processed_at = DateNanosField()

    class Index:
        name = getattr(settings, "PAYOUTS_INDEX", "payouts")
        settings = {"number_of_shards": 1, "number_of_replicas": 0}

    class Django:
        model = Payout
