"""A tenant spec refuses bad input naming the field; the secrets directory keeps files private and whole."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from tenancy import influx
from tenancy.secrets import NAMES, TenantSecrets, from_environment
from tenancy.spec import RANGES, TenantError, TenantSpec


def test_defaults_are_the_migrations() -> None:
    spec = TenantSpec.parse(id="acme", name="  Acme  ")
    assert (spec.name, spec.topic_prefix, spec.time_zone) == ("Acme", None, "UTC")
    assert (spec.series_budget, spec.raw_days, spec.rollup_months) == (10_000, 30, 24)
    assert spec.row()["tenant_id"] == "acme"
    assert "id" not in spec.row()


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"id": "Acme"}, "id", "must match"),
    ({"id": "a" * 33}, "id", "must match"),
    ({"id": "a-b"}, "id", "must match"),
    ({"name": " "}, "name", "name of 1 to"),
    ({"topic_prefix": "hats/#"}, "topic_prefix", "wildcard"),
    ({"topic_prefix": "hats/+/x/"}, "topic_prefix", "wildcard"),
    ({"topic_prefix": "hats/acme"}, "topic_prefix", "must end with '/'"),
    ({"topic_prefix": "/hats/acme/"}, "topic_prefix", "levels of letters"),
    ({"topic_prefix": "hats//acme/"}, "topic_prefix", "levels of letters"),
    ({"broker_url": "mqtt://broker.example:1883"}, "broker_username", "together"),
    ({"broker_username": "acme"}, "broker_url", "together"),
    ({"broker_url": "mqtt://u:p@broker.example", "broker_username": "acme"}, "broker_url", "mqtt://host"),
    ({"broker_url": "http://broker.example", "broker_username": "acme"}, "broker_url", "mqtt://host"),
    ({"ha_url": "ftp://ha.local"}, "ha_url", "base URL"),
    ({"time_zone": "Mars/Base"}, "time_zone", "unknown time zone 'Mars/Base'"),
    ({"time_zone": "../etc/passwd"}, "time_zone", "unknown time zone"),
    ({"series_budget": 0}, "series_budget", "from 1 to 1000000"),
    ({"series_budget": True}, "series_budget", "whole number"),
    ({"raw_days": 366}, "raw_days", "from 1 to 365"),
    ({"rollup_months": 0}, "rollup_months", "from 1 to 240"),
    ({"colour": "blue"}, "colour", "not a tenant field"),
])
def test_refusals_name_the_field(fields: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(TenantError) as refused:
        TenantSpec.parse(**({"id": "acme", "name": "Acme"} | fields))
    assert refused.value.field == field
    assert str(refused.value).startswith(f"{field}: ")
    assert words in str(refused.value)


@pytest.mark.parametrize(("field", "bounds"), sorted(RANGES.items()))
def test_ranges_are_inclusive(field: str, bounds: tuple[int, int]) -> None:
    for value in bounds:
        assert getattr(TenantSpec.parse(id="acme", name="Acme", **{field: value}), field) == value
    for value in (bounds[0] - 1, bounds[1] + 1):
        with pytest.raises(TenantError, match=f"^{field}: "):
            TenantSpec.parse(id="acme", name="Acme", **{field: value})


def test_ha_url_is_the_base_url() -> None:
    spec = TenantSpec.parse(id="acme", name="Acme", ha_url="http://ha.local:8123/api/websocket")
    assert spec.ha_url == "http://ha.local:8123"


def test_rollup_months_to_days_as_retention_converts() -> None:
    for months in (1, 12, 24, 240):
        days = influx.rollup_days(months)
        assert days >= months * 365.25 / 12 > days - 1.5  # rounded up, never short of the months asked for


def test_secret_files_are_private_and_atomic(tmp_path: Path) -> None:
    store = TenantSecrets(tmp_path / "tenants")
    written = store.write("acme", "pg_analyst", "s3cret")
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert stat.S_IMODE(written.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    store.write("acme", "pg_analyst", "other")
    assert store.read("acme", "pg_analyst") == "other"
    assert sorted(p.name for p in written.parent.iterdir()) == ["pg_analyst"]  # no temporary file left
    assert store.present("acme") == ["pg_analyst"]
    assert store.remove_all("acme") == ["pg_analyst"]
    assert not written.parent.exists()


def test_secret_names_and_tenants_are_checked(tmp_path: Path) -> None:
    store = TenantSecrets(tmp_path)
    with pytest.raises(ValueError, match="unknown tenant secret"):
        store.path("acme", "../../etc/passwd")
    with pytest.raises(ValueError, match="must match"):
        store.folder("../acme")
    assert set(NAMES) >= {"ha_token", "broker_password", "mqtt_homeassistant", "mqtt_device", "pg_analyst"}


def test_a_token_comes_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_TOKEN", "tok")
    assert from_environment("ACME_TOKEN", "ha_token") == "tok"
    monkeypatch.setenv("ACME_TOKEN", "")
    with pytest.raises(TenantError, match=r"^ha_token: the environment variable ACME_TOKEN is not set"):
        from_environment("ACME_TOKEN", "ha_token")


def test_hats_tenant_names_a_missing_setting(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 2 before any store is touched, naming every variable to set."""
    from devstack.cli import main
    from tenancy.settings import TenancySettings

    for name in TenancySettings.model_fields:
        monkeypatch.delenv(f"HATS_{name.upper()}", raising=False)
    monkeypatch.setenv("HATS_MQTT_PORT", "not-a-port")
    assert main(["tenant", "list"]) == 2
    err = capsys.readouterr().err
    assert "HATS_PG_DSN is not set" in err
    assert "HATS_TENANT_SECRETS_DIR is not set" in err
    assert "HATS_MQTT_PORT is invalid" in err


def test_hats_tenant_refuses_bad_input_before_connecting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A refused spec exits 1 naming the field, without reaching any service (none listens here)."""
    from devstack.cli import main

    settings = {"PG_DSN": "postgresql://nobody@127.0.0.1:9/none", "INFLUX_URL": "http://127.0.0.1:9",
                "INFLUX_ADMIN_USERNAME": "a", "INFLUX_ADMIN_PASSWORD": "b", "INFLUX_WRITER_USERNAME": "w",
                "INFLUX_DAGSTER_USERNAME": "d", "MQTT_HOST": "127.0.0.1", "MQTT_PORT": "9",
                "BROKER_ADMIN_USERNAME": "a", "BROKER_ADMIN_PASSWORD": "b", "TENANT_SECRETS_DIR": str(tmp_path)}
    for name, value in settings.items():
        monkeypatch.setenv(f"HATS_{name}", value)
    assert main(["tenant", "add", "acme", "--name", "Acme", "--prefix", "hats/#"]) == 1
    assert "refused: topic_prefix: 'hats/#' holds an MQTT wildcard" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
