"""Settings fail fast at start-up, naming the environment variable to fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from devstack.profile import PROJECT_ROOT, StackConfigError, load_profile
from ingest_worker.settings import ConfigError, load_settings

VALID = {
    "HATS_MQTT_USERNAME": "u", "HATS_MQTT_PASSWORD": "p", "HATS_INFLUX_WRITE_URL": "http://127.0.0.1:1",
    "HATS_INFLUX_USERNAME": "w", "HATS_INFLUX_PASSWORD": "p", "HATS_INGEST_DSN": "postgresql://x@127.0.0.1/y",
}


def test_valid_settings_load(clean_env: pytest.MonkeyPatch) -> None:
    for key, value in VALID.items():
        clean_env.setenv(key, value)
    settings = load_settings()
    assert settings.tenant == "home"
    assert settings.mqtt_password.get_secret_value() == "p"


def test_missing_settings_are_each_named(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HATS_MQTT_USERNAME", "u")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    for name in ("HATS_MQTT_PASSWORD", "HATS_INFLUX_WRITE_URL", "HATS_INGEST_DSN"):
        assert f"{name} is not set" in message
    assert "HATS_MQTT_USERNAME" not in message


@pytest.mark.parametrize(("name", "value"), [
    ("HATS_MQTT_PORT", "eighteen"), ("HATS_MQTT_PORT", "70000"), ("HATS_TENANT", "Bad Tenant"),
    ("HATS_INFLUX_WRITE_URL", "127.0.0.1:8086"), ("HATS_BATCH_MAX_POINTS", "0"),
])
def test_invalid_settings_are_named(clean_env: pytest.MonkeyPatch, name: str, value: str) -> None:
    for key, good in VALID.items():
        clean_env.setenv(key, good)
    clean_env.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{name} is invalid"):
        load_settings()


def test_worker_process_exits_2_with_the_message(clean_env: pytest.MonkeyPatch) -> None:
    result = subprocess.run([sys.executable, "-m", "ingest_worker"], capture_output=True, text=True,
                            cwd=PROJECT_ROOT, timeout=60, check=False)
    assert result.returncode == 2
    assert "HATS_MQTT_PASSWORD is not set" in result.stderr


def test_stack_port_setting_is_validated(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HATS_INFLUX_PORT", "80")
    with pytest.raises(StackConfigError, match="HATS_INFLUX_PORT=80"):
        load_profile("dev")
    clean_env.setenv("HATS_INFLUX_PORT", "18830")
    with pytest.raises(StackConfigError, match="share a port"):
        load_profile("dev")


def test_unreachable_postgres_at_start_names_the_setting(clean_env: pytest.MonkeyPatch) -> None:
    env = {**VALID, "HATS_INGEST_DSN": "postgresql://x:y@127.0.0.1:1/none", "HATS_HTTP_PORT": "0", "PATH": "/usr/bin"}
    result = subprocess.run([sys.executable, "-m", "ingest_worker"], capture_output=True, text=True,
                            cwd=PROJECT_ROOT, timeout=60, check=False, env=env)
    assert result.returncode == 1
    assert "PostgreSQL is unreachable at start-up" in result.stderr
    assert "HATS_INGEST_DSN" in result.stderr


def test_port_offset_moves_both_profiles_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HATS_PORT_OFFSET", raising=False)  # a worktree's own offset is not the base
    base = {name: load_profile(name).ports for name in ("dev", "test")}
    monkeypatch.setenv("HATS_PORT_OFFSET", "300")
    for name, ports in base.items():
        assert load_profile(name).ports == {service: port + 300 for service, port in ports.items()}
    for bad in ("x", "150", "-100", "9100"):
        monkeypatch.setenv("HATS_PORT_OFFSET", bad)
        with pytest.raises(StackConfigError, match="HATS_PORT_OFFSET"):
            load_profile("test")
