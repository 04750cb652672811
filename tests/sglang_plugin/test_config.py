"""SGLANG_MM_INPUT_MODE / SGLANG_MM_INPUT_CACHE_SIZE parsing: clear errors that name the variable and value."""

from __future__ import annotations

import pytest

from mminputs import DEFAULT_CACHE_CAPACITY, MMMode
from sglang_plugin.config import CACHE_ENV, MODE_ENV, PluginConfigError, config_from_env


@pytest.mark.parametrize("value", ["", "  ", "off", "OFF", "upstream", "none"])
def test_off_values_leave_sglang_untouched(value):
    config = config_from_env({MODE_ENV: value})
    assert config.mode is None and not config.enabled


def test_unset_is_off():
    assert config_from_env({}).mode is None


@pytest.mark.parametrize("mode", list(MMMode))
def test_every_shared_mode_is_accepted(mode):
    config = config_from_env({MODE_ENV: f" {mode.value.upper()} "})
    assert config.mode is mode and config.cache_capacity == DEFAULT_CACHE_CAPACITY


def test_bad_mode_names_variable_value_and_choices():
    with pytest.raises(PluginConfigError) as exc:
        config_from_env({MODE_ENV: "fast"})
    message = str(exc.value)
    assert "SGLANG_MM_INPUT_MODE='fast'" in message and "sharded" in message and "off" in message


def test_cache_capacity():
    assert config_from_env({MODE_ENV: "batched", CACHE_ENV: "16"}).cache_capacity == 16
    for bad in ("0", "-3", "lots", "1.5"):
        with pytest.raises(PluginConfigError, match=rf"SGLANG_MM_INPUT_CACHE_SIZE='{bad}'"):
            config_from_env({MODE_ENV: "batched", CACHE_ENV: bad})
