"""``datapipe_django.conf``: the ``DATAPIPE`` settings object (defaults, lazy reads, reset on
``setting_changed``, clear errors)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from datapipe_django.conf import DEFAULTS, DatapipeSettings, datapipe_settings


def test_an_unset_key_reads_its_default() -> None:
    with override_settings(DATAPIPE={}):
        for key, default in DEFAULTS.items():
            assert getattr(datapipe_settings, key) == default, key


def test_a_set_key_wins_and_override_settings_resets_the_cache() -> None:
    before = datapipe_settings.MAX_LIMIT
    with override_settings(DATAPIPE={"MAX_LIMIT": 7}):
        assert datapipe_settings.MAX_LIMIT == 7
        assert DEFAULTS["DEFAULT_LIMIT"] == datapipe_settings.DEFAULT_LIMIT
    assert before == datapipe_settings.MAX_LIMIT


def test_values_are_read_once_until_reloaded() -> None:
    settings_object = DatapipeSettings({"A": 1})
    with override_settings(DATAPIPE={"A": 2}):
        assert settings_object.A == 2
        with override_settings(DATAPIPE={"A": 3}):  # only the global object listens
            assert settings_object.A == 2
            settings_object.reload()
            assert settings_object.A == 3


def test_an_unknown_key_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="Invalid DATAPIPE setting: 'NOPE'"):
        datapipe_settings.NOPE  # noqa: B018
    with pytest.raises(AttributeError):
        datapipe_settings._cache_of_something  # noqa: B018


def test_datapipe_must_be_a_dict() -> None:
    with override_settings(DATAPIPE=["TIMEOUT", 1]), pytest.raises(
            ImproperlyConfigured, match=r"settings\.DATAPIPE must be a dict, got list"):
        datapipe_settings.TIMEOUT  # noqa: B018


def test_datapipe_unset_is_every_default() -> None:
    with override_settings(DATAPIPE=None):
        assert DEFAULTS["TIMEOUT"] == datapipe_settings.TIMEOUT
