"""The generated Home Assistant config and install plan, without Home Assistant (pure functions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]
from packaging.specifiers import SpecifierSet

from devstack.home_assistant import config, install


def test_the_yaml_written_reads_back_as_the_same_configuration() -> None:
    data = config.configuration(8123, "hats/x/homeassistant/statestream", "hats/x/homeassistant/events")
    assert yaml.safe_load(config.to_yaml(data)) == data


def test_templates_and_units_survive_the_yaml() -> None:
    text = config.to_yaml({"on": "{{ is_state('input_boolean.x', 'on') }}", "unit": "°C", "empty": {}, "list": []})
    assert yaml.safe_load(text) == {"on": "{{ is_state('input_boolean.x', 'on') }}", "unit": "°C",
                                    "empty": {}, "list": []}


def test_every_number_has_its_helper_and_sensor() -> None:
    data = config.configuration(1, "a", "b")
    sensors = {s["name"] for s in data["template"][0]["sensor"]}  # type: ignore[index]
    for number in config.NUMBERS:
        assert number.key in data["input_number"]  # type: ignore[operator]
        assert number.key in sensors
    assert {"mqtt", "mqtt_statestream", "mqtt_eventstream", "recorder", "template"} <= set(config.domains())


def _manifest(components: Path, domain: str, requirements: list[str], dependencies: list[str]) -> None:
    (components / domain).mkdir(parents=True)
    (components / domain / "manifest.json").write_text(json.dumps(
        {"domain": domain, "requirements": requirements, "dependencies": dependencies}))


def test_requirements_follow_dependencies_once(tmp_path: Path) -> None:
    _manifest(tmp_path, "history", [], ["recorder", "http"])
    _manifest(tmp_path, "recorder", ["SQLAlchemy==2.0.27"], ["http"])
    _manifest(tmp_path, "http", ["aiohttp_cors==0.7.0"], [])
    _manifest(tmp_path, "unused", ["numpy"], [])
    assert install.integration_requirements(tmp_path, ["history"]) == ["SQLAlchemy==2.0.27", "aiohttp_cors==0.7.0"]


def test_an_unknown_integration_is_an_install_error(tmp_path: Path) -> None:
    with pytest.raises(install.InstallError, match="no integration 'nope'"):
        install.integration_requirements(tmp_path, ["nope"])


def test_the_interpreter_must_satisfy_the_release(monkeypatch: pytest.MonkeyPatch) -> None:
    base = install._base_python()
    monkeypatch.setenv(install.PYTHON_SETTING, f"/nonexistent/python3:{base}")
    assert install.find_python("test", SpecifierSet(">=3.8"))[0] == base
    with pytest.raises(install.InstallError, match="HATS_HA_PYTHON"):
        install.find_python("test", SpecifierSet(">=3.99"))
