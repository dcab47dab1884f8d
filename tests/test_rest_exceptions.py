"""``datapipe_django.rest.exceptions``: the one HTTP mapping of pipeline errors. Bad input is
DRF's field-error body; a failure's body is generic (no host, driver message or source
reason) unless ``DEBUG``; a 503 says when to retry and which sources were down unless
``SOURCE_HEADERS`` is off."""

from __future__ import annotations

import pytest
from django.test import override_settings

from datapipe_django.errors import (
    DeadlineExceeded,
    EnrichmentFailed,
    NoFetcher,
    PipelineError,
    SourcesUnavailable,
    ValidationFailed,
)
from datapipe_django.rest.exceptions import UNAVAILABLE_HEADER, pipeline_error_response

SECRET = "connection to 10.0.0.7:5432 refused: password authentication failed"


def test_bad_input_is_drf_field_errors() -> None:
    response = pipeline_error_response(ValidationFailed({"status": ["Not a choice."]}))
    assert response.status_code == 400
    assert response.data == {"status": ["Not a choice."]}


@pytest.mark.parametrize("error", [
    SourcesUnavailable(SECRET, reasons={"appdb": SECRET}),
    DeadlineExceeded(SECRET, stage="fetch", op="appdb"),
    EnrichmentFailed(SECRET, op="ledger"),
    PipelineError(SECRET),
], ids=lambda e: type(e).__name__)
def test_a_failure_body_is_generic(error: PipelineError) -> None:
    with override_settings(DEBUG=False):
        response = pipeline_error_response(error)
    assert response.status_code == error.status_code
    assert response.data == {"detail": type(error).default_message, "code": error.code}
    assert SECRET not in str(response.data)


def test_with_debug_the_body_adds_the_reasons() -> None:
    with override_settings(DEBUG=True):
        unavailable = pipeline_error_response(SourcesUnavailable(reasons={"appdb": "down"}))
        late = pipeline_error_response(DeadlineExceeded("took 3s", op="appdb"))
    assert unavailable.data["reasons"] == {"appdb": "down"}
    assert late.data["reasons"] == {"appdb": "took 3s"}


def test_a_503_says_when_to_retry_and_which_sources_were_down() -> None:
    error = SourcesUnavailable(reasons={"appdb": "down", "archive": "timeout"})
    response = pipeline_error_response(error)
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response[UNAVAILABLE_HEADER] == "appdb,archive"
    with override_settings(DATAPIPE={"SOURCE_HEADERS": False, "RETRY_AFTER": 7}):
        quiet = pipeline_error_response(error)
    assert quiet["Retry-After"] == "7"
    assert not quiet.has_header(UNAVAILABLE_HEADER)


def test_no_fetcher_tells_the_client_what_to_change() -> None:
    with override_settings(DEBUG=False):
        response = pipeline_error_response(NoFetcher(reasons={"appdb": "filter 'x' ..."}))
    assert response.status_code == 400
    assert response.data == {"detail": "No source can serve this combination of parameters; "
                                       "drop or change a filter.", "code": "no_fetcher"}
