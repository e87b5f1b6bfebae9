"""Fixtures the unit tests share."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No HATS_* variable from the caller's shell (a sourced .hats/env) leaks into a settings test."""
    for key in list(os.environ):
        if key.startswith("HATS_"):
            monkeypatch.delenv(key)
    return monkeypatch
