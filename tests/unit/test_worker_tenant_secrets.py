"""How a registry-mode worker finds a home's secret: the folder `hats tenant` writes, or the flat file a
Kubernetes Secret mounted whole gives (`<tenant>.<name>`: how a new home's secret reaches running pods)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest_worker.tenants import TenantConfigError, read_secret


def test_the_folder_layout_and_the_flat_layout_are_both_read(tmp_path: Path) -> None:
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "ha_token").write_text("folder-token\n")
    (tmp_path / "bravo.ha_token").write_text("flat-token\n")
    assert read_secret(tmp_path, "acme", "ha_token") == "folder-token"
    assert read_secret(tmp_path, "bravo", "ha_token") == "flat-token"


def test_the_folder_wins_when_both_exist(tmp_path: Path) -> None:
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "broker_password").write_text("current")
    (tmp_path / "acme.broker_password").write_text("stale")
    assert read_secret(tmp_path, "acme", "broker_password") == "current"


def test_a_missing_or_empty_secret_names_the_files_never_a_value(tmp_path: Path) -> None:
    with pytest.raises(TenantConfigError, match=r"acme/ha_token \(or acme\.ha_token\) is missing"):
        read_secret(tmp_path, "acme", "ha_token")
    (tmp_path / "acme.ha_token").write_text("  \n")
    with pytest.raises(TenantConfigError, match="is empty"):
        read_secret(tmp_path, "acme", "ha_token")
