"""`hats tenant …` and its registry against the real stack: adding makes everything a home needs, bad input
is refused naming the field with nothing half-made, removal is a plan first, and every action is audited.

"Nothing half-made" is checked by comparing the full lists before and after: InfluxDB databases,
PostgreSQL tenant rows, iam accounts and roles, the broker's accounts and the secret files.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from devstack.profile import PROJECT_ROOT, Profile
from ingest_worker.contract import database_for
from tenancy import influx
from tenancy.analyst_roles import analyst_role_name
from tenancy.broker import BrokerAdmin, BrokerAdminError, account_name
from tenancy.registry import TenantRegistry
from tenancy.settings import load_settings
from tenancy.spec import TenantError, TenantSpec
from tests.conftest import registry_for
from tests.mqtt import connect_code

PG_LACKS_ZONE = "right/UTC"


def _id() -> str:
    return f"a{uuid.uuid4().hex[:12]}"


@pytest.fixture
def registry(profile: Profile, stack_env: dict[str, str]) -> TenantRegistry:
    return registry_for(profile, stack_env)


@pytest.fixture
def made(registry: TenantRegistry) -> Iterator[list[str]]:
    """Ids a test adds itself; removed after it (whatever it left)."""
    ids: list[str] = []
    yield ids
    existing = {record.tenant_id for record in registry.list_tenants()}
    for tenant_id in ids:
        if tenant_id in existing:
            registry.remove(tenant_id, dry_run=False)


def _pg(stack_env: dict[str, str], query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(stack_env["HATS_PG_DSN"]) as conn:
        return conn.execute(query, params).fetchall()


def snapshot(registry: TenantRegistry, stack_env: dict[str, str]) -> dict[str, set[str]]:
    """Everything a tenant could leave behind, in full: every database, tenant row, iam row, audit row,
    role, broker account and secret file of the stack."""
    with BrokerAdmin.from_settings(registry.settings) as broker:
        clients = broker.run([{"command": "listClients"}])[0]["data"]["clients"]
    root = registry.settings.tenant_secrets_dir
    return {
        "databases": set(registry.influx.databases()),
        "tenants": {str(row) for row in _pg(stack_env, "SELECT * FROM core.tenants")},
        "iam": {str(row) for row in _pg(stack_env, "SELECT * FROM iam.accounts")},
        "audit": {str(row) for row in _pg(stack_env, "SELECT * FROM ops.tenant_audit")},
        "roles": {row[0] for row in _pg(stack_env, "SELECT rolname FROM pg_roles")},
        "broker": set(clients),
        "secrets": {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set(),
    }


def assert_unchanged(before: dict[str, set[str]], after: dict[str, set[str]], *tenant_ids: str) -> None:
    """Nothing of these tenants appeared, changed or went. The stack is shared with other sessions, so
    what differs must belong to none of them (alone on the stack, nothing differs at all)."""
    for kind in before:
        differs = before[kind] ^ after[kind]
        ours = sorted(item for item in differs if any(tenant_id in item for tenant_id in tenant_ids))
        assert ours == [], f"{kind} changed: {ours}"


def hats(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`hats tenant …` as the operator runs it: a process with the stack's settings in its environment."""
    return subprocess.run([sys.executable, "-m", "devstack.cli", "tenant", *args], env={**os.environ, **env},
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)


def test_add_makes_everything(registry: TenantRegistry, stack_env: dict[str, str], made: list[str]) -> None:
    tenant_id = _id()
    made.append(tenant_id)
    prefix = f"hats/{tenant_id}/"
    token = uuid.uuid4().hex
    result = hats({**stack_env, "ACME_HA_TOKEN": token}, "add", tenant_id, "--name", "Acme", "--prefix", prefix,
                  "--ha-url", "http://ha.example:8123", "--ha-token-env", "ACME_HA_TOKEN",
                  "--time-zone", "Europe/Amsterdam", "--series-budget", "500", "--raw-days", "45",
                  "--rollup-months", "13")
    assert result.returncode == 0, result.stderr
    assert token not in result.stdout + result.stderr

    row = _pg(stack_env, """SELECT name, topic_prefix, ha_url, time_zone, time_zone_source, series_budget, raw_days,
                                   rollup_months, status, disabled_at FROM core.tenants WHERE tenant_id = %s""",
              tenant_id)
    assert row == [("Acme", prefix, "http://ha.example:8123", "Europe/Amsterdam", "operator", 500, 45, 13,
                    "active", None)]

    database = database_for(tenant_id)
    policies = registry.influx.retention_policies(database)
    assert policies["raw"] == (f"{45 * 24}h0m0s", True)
    assert policies["rollup"] == (f"{influx.rollup_days(13) * 24}h0m0s", False)
    assert influx.rollup_days(13) * 24 * 3600 >= 13 * 365.25 / 12 * 86400
    assert registry.influx.grants(stack_env["HATS_INFLUX_WRITER_USERNAME"])[database] == "WRITE"
    assert registry.influx.grants(stack_env["HATS_INFLUX_DAGSTER_USERNAME"])[database] == "ALL PRIVILEGES"

    ha, device, analyst = account_name(tenant_id, "ha"), account_name(tenant_id, "device"), analyst_role_name(tenant_id)
    accounts = _pg(stack_env, "SELECT system, name, disabled_at FROM iam.accounts WHERE tenant_id = %s ORDER BY 1, 2",
                   tenant_id)
    assert accounts == [("mqtt", device, None), ("mqtt", ha, None), ("postgresql", analyst, None)]

    folder = registry.settings.tenant_secrets_dir / tenant_id
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == sorted(["ha_token", "mqtt_device", "mqtt_homeassistant", "pg_analyst"])
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert (folder / "ha_token").read_text() == token

    # The accounts work with the passwords in the secrets directory.
    port = int(stack_env["HATS_MQTT_PORT"])
    for name, secret in ((ha, "mqtt_homeassistant"), (device, "mqtt_device")):
        assert not connect_code(port, name, (folder / secret).read_text(), client_id=name).is_failure
    dsn = psycopg.conninfo.make_conninfo(stack_env["HATS_PG_DSN"], user=analyst,
                                         password=(folder / "pg_analyst").read_text())
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (analyst,)

    audit = _pg(stack_env, "SELECT action, actor, details FROM ops.tenant_audit WHERE tenant_id = %s", tenant_id)
    assert [a[0] for a in audit] == ["add"]
    assert audit[0][1].endswith(" as " + str(psycopg.conninfo.conninfo_to_dict(stack_env["HATS_PG_DSN"])["user"]))
    assert token not in str(audit)
    assert (folder / "pg_analyst").read_text() not in str(audit)

    shown = registry.show(tenant_id)
    assert shown.database_exists
    assert set(shown.secrets) == {f.name for f in files}
    assert {a["name"] for a in shown.accounts} == {ha, device, analyst}
    listed = hats(stack_env, "list")
    assert listed.returncode == 0
    assert any(line.split()[:3] == [tenant_id, "active", prefix]
                                          for line in listed.stdout.splitlines())


@pytest.mark.parametrize(("case", "field"), [
    ("duplicate id", "id"),
    ("unknown time zone", "time_zone"),
    ("time zone PostgreSQL lacks", "time_zone"),
    ("overlapping prefix", "topic_prefix"),
    ("prefix inside another", "topic_prefix"),
    ("prefix with a wildcard", "topic_prefix"),
    ("budget 0", "series_budget"),
    ("missing token variable", "ha_token"),
])
def test_refused_input_leaves_nothing(case: str, field: str, registry: TenantRegistry, stack_env: dict[str, str],
                                      made: list[str], monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    existing = _id()
    made.append(existing)
    registry.add(TenantSpec(id=existing, name="first", topic_prefix=f"hats/{existing}/home/"))
    tenant_id = _id()
    made.append(tenant_id)
    args = {
        "duplicate id": [existing, "--name", "again", "--prefix", f"hats/{tenant_id}/"],
        "unknown time zone": [tenant_id, "--name", "x", "--time-zone", "Mars/Base"],
        # The system's tzdata has the leap-second zones, PostgreSQL's has not: its constraint refuses it.
        "time zone PostgreSQL lacks": [tenant_id, "--name", "x", "--time-zone", PG_LACKS_ZONE],
        "overlapping prefix": [tenant_id, "--name", "x", "--prefix", f"hats/{existing}/"],
        "prefix inside another": [tenant_id, "--name", "x", "--prefix", f"hats/{existing}/home/kitchen/"],
        "prefix with a wildcard": [tenant_id, "--name", "x", "--prefix", "hats/+/"],
        "budget 0": [tenant_id, "--name", "x", "--series-budget", "0"],
        "missing token variable": [tenant_id, "--name", "x", "--ha-url", "http://ha.example:8123",
                                   "--ha-token-env", "HATS_TEST_NO_SUCH_VARIABLE"],
    }[case]
    for key, value in stack_env.items():
        monkeypatch.setenv(key, value)
    before = snapshot(registry, stack_env)
    from devstack.cli import main

    assert main(["tenant", "add", *args]) == 1
    message = capsys.readouterr().err
    assert f"refused: {field}: " in message
    if "prefix" in case and "wildcard" not in case:
        assert f"overlaps the prefix of tenant {existing}" in message
    if case == "time zone PostgreSQL lacks":
        ZoneInfo(PG_LACKS_ZONE)  # the spec's own check passed: the refusal is PostgreSQL's
        assert "unknown time zone to PostgreSQL" in message
    if case == "duplicate id":
        assert f"tenant '{existing}' already exists" in message
    assert_unchanged(before, snapshot(registry, stack_env), existing, tenant_id)


def test_a_later_step_failing_undoes_the_earlier(registry: TenantRegistry, stack_env: dict[str, str],
                                                 made: list[str]) -> None:
    """The broker admin's password is wrong: the row, the analyst role (PostgreSQL, rolled back) and the
    InfluxDB database (made before the broker, dropped again) must all be gone, and no secret written."""
    tenant_id = _id()
    made.append(tenant_id)
    broken = TenantRegistry(load_settings({**stack_env, "HATS_BROKER_ADMIN_PASSWORD": "not-the-password"}))
    before = snapshot(registry, stack_env)
    with pytest.raises(BrokerAdminError, match="HATS_BROKER_ADMIN_PASSWORD"):
        broken.add(TenantSpec(id=tenant_id, name="x", topic_prefix=f"hats/{tenant_id}/"))
    assert_unchanged(before, snapshot(registry, stack_env), tenant_id)
    assert database_for(tenant_id) not in before["databases"]


def test_remove_is_a_plan_first(registry: TenantRegistry, stack_env: dict[str, str], made: list[str]) -> None:
    tenant_id = _id()
    made.append(tenant_id)
    registry.add(TenantSpec(id=tenant_id, name="x", topic_prefix=f"hats/{tenant_id}/"))
    with psycopg.connect(stack_env["HATS_PG_DSN"]) as conn:
        conn.execute("""INSERT INTO ops.dead_letters (received_at, tenant_id, topic, payload, reason)
                        VALUES (now(), %s, 't', '\\x00', 'test')""", (tenant_id,))
        conn.execute("""INSERT INTO core.entities (tenant_id, entity_id, domain, measurement, source)
                        VALUES (%s, 'sensor.x', 'sensor', 'temperature', 'statestream')""", (tenant_id,))
        conn.execute("""INSERT INTO billing.usage_daily (tenant_id, day, points_ingested, series, dead_letters,
                                                         raw_bytes, rollup_bytes)
                        VALUES (%s, current_date, 10, 1, 1, 100, 0)""", (tenant_id,))
    before = snapshot(registry, stack_env)

    plan = hats(stack_env, "remove", tenant_id)
    assert plan.returncode == 0, plan.stderr
    assert_unchanged(before, snapshot(registry, stack_env), tenant_id)
    assert "nothing changed" in plan.stderr
    ha, device, analyst = account_name(tenant_id, "ha"), account_name(tenant_id, "device"), analyst_role_name(tenant_id)
    for expected in (database_for(tenant_id), "ops.dead_letters: 1", "core.entities: 1", "core.tenants: 1",
                     f"mqtt:{ha}", f"mqtt:{device}", f"postgresql:{analyst}", "mqtt_homeassistant", "pg_analyst"):
        assert expected in plan.stdout
    assert "billing" not in plan.stdout.split("kept):", 1)[1]

    removed = registry.remove(tenant_id, dry_run=False)
    assert removed.done
    assert removed.rows["ops.dead_letters"] == 1
    after = snapshot(registry, stack_env)
    assert database_for(tenant_id) not in after["databases"]
    assert not any(f"'{tenant_id}'" in row for row in after["tenants"] | after["iam"])
    assert analyst not in after["roles"]
    assert ha not in after["broker"]
    assert device not in after["broker"]
    assert not any(path.startswith(tenant_id) for path in after["secrets"])
    for table in ("ops.dead_letters", "core.entities", "core.tenants"):
        assert _pg(stack_env, f"SELECT count(*) FROM {table} WHERE tenant_id = %s", tenant_id) == [(0,)]
    assert _pg(stack_env, "SELECT points_ingested FROM billing.usage_daily WHERE tenant_id = %s", tenant_id) == [(10,)]
    audit = _pg(stack_env, "SELECT action, details FROM ops.tenant_audit WHERE tenant_id = %s ORDER BY audit_id",
                tenant_id)
    assert [a[0] for a in audit] == ["add", "remove"]
    assert audit[1][1]["plan"]["rows"]["ops.dead_letters"] == 1
    assert audit[1][1]["plan"]["database"]
    with psycopg.connect(stack_env["HATS_PG_DSN"]) as conn:
        conn.execute("DELETE FROM billing.usage_daily WHERE tenant_id = %s", (tenant_id,))


def test_disable_and_enable(registry: TenantRegistry, stack_env: dict[str, str], made: list[str]) -> None:
    tenant_id = _id()
    made.append(tenant_id)
    registry.add(TenantSpec(id=tenant_id, name="x", topic_prefix=f"hats/{tenant_id}/"))
    folder = registry.settings.tenant_secrets_dir / tenant_id
    port = int(stack_env["HATS_MQTT_PORT"])
    ha = account_name(tenant_id, "ha")
    analyst = analyst_role_name(tenant_id)
    dsn = psycopg.conninfo.make_conninfo(stack_env["HATS_PG_DSN"], user=analyst,
                                         password=(folder / "pg_analyst").read_text())

    def can_log_in() -> tuple[bool, bool]:
        mqtt_ok = not connect_code(port, ha, (folder / "mqtt_homeassistant").read_text(), client_id=ha).is_failure
        try:
            psycopg.connect(dsn).close()
        except psycopg.OperationalError:
            return mqtt_ok, False
        return mqtt_ok, True

    assert can_log_in() == (True, True)
    disabled = registry.disable(tenant_id)
    assert disabled.status == "disabled"
    assert disabled.disabled_at is not None
    assert can_log_in() == (False, False)
    assert all(row[0] is not None for row in _pg(stack_env, "SELECT disabled_at FROM iam.accounts WHERE tenant_id = %s",
                                                 tenant_id))
    enabled = registry.enable(tenant_id)
    assert enabled.status == "active"
    assert enabled.disabled_at is None
    assert can_log_in() == (True, True)
    audit = _pg(stack_env, "SELECT action, details FROM ops.tenant_audit WHERE tenant_id = %s ORDER BY audit_id",
                tenant_id)
    assert [a[0] for a in audit] == ["add", "disable", "enable"]
    assert audit[1][1]["status"] == {"from": "active", "to": "disabled"}


def test_change(registry: TenantRegistry, stack_env: dict[str, str], made: list[str]) -> None:
    first, second = _id(), _id()
    made += [first, second]
    registry.add(TenantSpec(id=first, name="x", topic_prefix=f"hats/{first}/"))
    registry.add(TenantSpec(id=second, name="y", topic_prefix=f"hats/{second}/"))
    before = snapshot(registry, stack_env)
    with pytest.raises(TenantError, match=f"^topic_prefix: overlaps the prefix of tenant {first}"):
        registry.change(second, topic_prefix=f"hats/{first}/sub/", raw_days=60)
    assert_unchanged(before, snapshot(registry, stack_env), first, second)
    default_raw = TenantSpec(id=second, name="y").raw_days
    assert registry.influx.retention_policies(database_for(second))["raw"] == (f"{default_raw * 24}h0m0s", True)

    changed = registry.change(second, raw_days=60, rollup_months=36, time_zone="Asia/Tokyo")
    assert (changed.raw_days, changed.rollup_months, changed.time_zone, changed.time_zone_source) == (
        60, 36, "Asia/Tokyo", "operator")
    policies = registry.influx.retention_policies(database_for(second))
    assert policies["raw"] == (f"{60 * 24}h0m0s", True)
    assert policies["rollup"][0] == f"{influx.rollup_days(36) * 24}h0m0s"
    audit = _pg(stack_env, "SELECT details FROM ops.tenant_audit WHERE tenant_id = %s AND action = 'change'", second)
    assert audit[-1][0]["fields"]["raw_days"] == {"from": 30, "to": 60}


def test_hats_up_made_the_demo_home_a_tenant(registry: TenantRegistry, stack_env: dict[str, str]) -> None:
    home = registry.show(stack_env["HATS_TENANT"])
    assert home.database_exists
    assert analyst_role_name(home.record.tenant_id) in {a["name"] for a in home.accounts}
    assert "pg_analyst" in home.secrets
    policies = registry.influx.retention_policies(home.record.database)
    assert policies["rollup"] == (f"{influx.rollup_days(home.record.rollup_months) * 24}h0m0s", False)
    assert policies["raw"][1]  # the default policy (retention may have lengthened it beyond raw_days)


def test_add_again_restores_a_lost_secret(registry: TenantRegistry, stack_env: dict[str, str],
                                          made: list[str]) -> None:
    """`add(exist_ok=True)` (what `hats up` runs for the demo home) makes what is missing: a lost secret
    file gets a new password, and the broker account gets it too (an ensure alone keeps the old one)."""
    tenant_id = _id()
    made.append(tenant_id)
    spec = TenantSpec(id=tenant_id, name="x", topic_prefix=f"hats/{tenant_id}/")
    registry.add(spec)
    device = account_name(tenant_id, "device")
    lost = registry.secrets.read(tenant_id, "mqtt_device")
    assert lost is not None
    registry.secrets.remove(tenant_id, "mqtt_device")
    registry.add(spec, exist_ok=True)
    restored = registry.secrets.read(tenant_id, "mqtt_device")
    assert restored is not None
    assert restored != lost
    port = int(stack_env["HATS_MQTT_PORT"])
    assert not connect_code(port, device, restored, client_id=device).is_failure
    assert connect_code(port, device, lost, client_id=device).is_failure
    audit = _pg(stack_env, "SELECT action, details FROM ops.tenant_audit WHERE tenant_id = %s ORDER BY audit_id",
                tenant_id)
    assert [a[0] for a in audit] == ["add", "add"]
    assert audit[1][1]["made"] == ["secret:mqtt_device"]
