"""``datapipe_django.errors``: the exception tree, its HTTP statuses as data, and
``ValidationFailed``'s one shape of field messages."""

from __future__ import annotations

import pytest

from datapipe_django.errors import (
    DeadlineExceeded,
    EnrichmentFailed,
    NoFetcher,
    PipelineError,
    SourcesUnavailable,
    SourceUnavailable,
    ValidationFailed,
)


@pytest.mark.parametrize(("kind", "status", "code"), [
    (ValidationFailed, 400, "invalid"),
    (NoFetcher, 400, "no_fetcher"),
    (SourcesUnavailable, 503, "sources_unavailable"),
    (DeadlineExceeded, 504, "deadline_exceeded"),
    (EnrichmentFailed, 502, "enrichment_failed"),
])
def test_each_kind_is_a_pipeline_error_with_its_status(kind: type[PipelineError], status: int,
                                                       code: str) -> None:
    error = kind()
    assert isinstance(error, PipelineError)
    assert (error.status_code, error.code) == (status, code)
    assert str(error) == error.message


def test_a_source_unavailable_is_not_a_pipeline_error() -> None:
    cause = ConnectionRefusedError("refused")
    error = SourceUnavailable("appdb", "connection refused", cause=cause)
    assert not isinstance(error, PipelineError)
    assert (error.source, error.reason, error.cause) == ("appdb", "connection refused", cause)
    assert str(error) == "appdb: connection refused"


def test_validation_failed_keeps_every_parameter_as_a_list_of_strings() -> None:
    error = ValidationFailed({"status": "bad", "limit": ["too big", 7]})
    assert error.errors == {"status": ["bad"], "limit": ["too big", "7"]}
    assert error.message == "Invalid parameter(s): status, limit."
    assert error.stage == "validate"


def test_validation_failed_from_a_message_names_its_parameter_or_none() -> None:
    assert ValidationFailed("no", op="cursor").errors == {"cursor": ["no"]}
    assert ValidationFailed("no").errors == {"non_field_errors": ["no"]}
    assert ValidationFailed().message == "Invalid parameter(s): request."


def test_the_stage_op_and_cause_are_kept_and_shown() -> None:
    cause = TimeoutError("slow")
    error = DeadlineExceeded(stage="enrich", op="user", cause=cause)
    assert (error.stage, error.op, error.cause) == ("enrich", "user", cause)
    assert repr(error) == ("DeadlineExceeded('The request took longer than its deadline.', "
                           "stage='enrich', op='user', cause=TimeoutError('slow'))")


def test_no_fetcher_and_sources_unavailable_carry_each_source_reason() -> None:
    assert NoFetcher(reasons={"appdb": "declined"}).reasons == {"appdb": "declined"}
    error = SourcesUnavailable(reasons={"appdb": "down"})
    assert error.reasons == {"appdb": "down"} and error.stage == "fetch"
