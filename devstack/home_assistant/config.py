"""`configuration.yaml` for a test Home Assistant: no `default_config`, only what the tests drive.

Every kind of entity the platform normalises is a template sensor fed by a helper (`input_number`,
`input_boolean`, `input_select`) with a fixed `initial`, so its state is deterministic across restarts
and a test changes it with one service call. The file is written as YAML from plain data (JSON scalars
are valid YAML), so no YAML library is needed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

TIME_ZONE = "Europe/Amsterdam"
LATITUDE = 52.3731
LONGITUDE = 4.8922
ELEVATION = 0
# The integrations the config names, plus the one set up from a config entry (install.py needs them all).
CONFIG_ENTRY_DOMAINS = ("mqtt",)
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


@dataclass(frozen=True)
class Number:
    """An `input_number` and the template sensor that reports it with a unit and classes."""

    key: str
    initial: float
    minimum: float
    maximum: float
    step: float
    unit: str | None
    device_class: str | None
    state_class: str | None

    @property
    def input_entity(self) -> str:
        return f"input_number.{self.key}"

    @property
    def sensor_entity(self) -> str:
        return f"sensor.{self.key}"


NUMBERS = (
    Number("temperature_c", 21.5, -40, 60, 0.1, "°C", "temperature", "measurement"),
    Number("temperature_f", 70.7, -40, 140, 0.1, "°F", "temperature", "measurement"),
    Number("humidity", 45, 0, 100, 0.1, "%", "humidity", "measurement"),
    Number("power_w", 120, 0, 100_000, 0.1, "W", "power", "measurement"),
    Number("power_kw", 1.5, 0, 100, 0.001, "kW", "power", "measurement"),
    Number("energy_kwh", 100, 0, 1_000_000, 0.001, "kWh", "energy", "total_increasing"),
    Number("energy_wh", 5000, 0, 1_000_000_000, 1, "Wh", "energy", "total_increasing"),
    Number("energy_net_kwh", 0, -1_000_000, 1_000_000, 0.001, "kWh", "energy", "total"),
    Number("battery", 87, 0, 100, 1, "%", "battery", "measurement"),
    # Reported as unavailable while input_boolean.flaky_available is off (template `availability`).
    Number("flaky_temperature", 19, -40, 60, 0.1, "°C", "temperature", "measurement"),
    # Its unit is whatever input_select.variable_unit says (W or kW): a unit that changes.
    Number("variable_power", 500, 0, 100_000, 0.001, None, None, "measurement"),
)
DOOR = "binary_sensor.front_door"
DOOR_INPUT = "input_boolean.front_door"
SWITCH = "switch.heater"
SWITCH_INPUT = "input_boolean.heater"
MODE = "sensor.heating_mode"
MODE_INPUT = "input_select.heating_mode"
MODE_OPTIONS = ("eco", "comfort", "away")
FLAKY_AVAILABLE = "input_boolean.flaky_available"
UNIT_INPUT = "input_select.variable_unit"
UNIT_OPTIONS = ("W", "kW")


def _template_sensor(number: Number) -> dict[str, object]:
    sensor: dict[str, object] = {"name": number.key, "unique_id": f"hats_{number.key}",
                                 "state": f"{{{{ states('{number.input_entity}') | float(0) }}}}"}
    for key, value in (("unit_of_measurement", number.unit), ("device_class", number.device_class),
                       ("state_class", number.state_class)):
        if value is not None:
            sensor[key] = value
    if number.key == "flaky_temperature":
        sensor["availability"] = f"{{{{ is_state('{FLAKY_AVAILABLE}', 'on') }}}}"
    if number.key == "variable_power":
        sensor["attributes"] = {"unit_of_measurement": f"{{{{ states('{UNIT_INPUT}') }}}}"}
    return sensor


def configuration(port: int, statestream_base: str, eventstream_topic: str) -> dict[str, object]:
    """The whole configuration as data; the two topics come from the caller (a fresh namespace per session)."""
    entity = MODE_INPUT.split(".")[1]
    return {
        "homeassistant": {"name": "hats test home", "latitude": LATITUDE, "longitude": LONGITUDE,
                          "elevation": ELEVATION, "time_zone": TIME_ZONE, "unit_system": "metric",
                          "currency": "EUR", "country": "NL", "auth_providers": [{"type": "homeassistant"}]},
        "http": {"server_host": ["127.0.0.1"], "server_port": port},
        "logger": {"default": "warning"},
        "recorder": {"commit_interval": 0, "purge_keep_days": 3},
        "history": {},
        "api": {},
        "websocket_api": {},
        "mqtt_statestream": {"base_topic": statestream_base, "publish_attributes": True,
                             "publish_timestamps": True},
        "mqtt_eventstream": {"publish_topic": eventstream_topic},
        "input_number": {n.key: {"name": n.key, "initial": n.initial, "min": n.minimum, "max": n.maximum,
                                 "step": n.step, "mode": "box"} for n in NUMBERS},
        "input_boolean": {key.split(".")[1]: {"name": key.split(".")[1], "initial": initial}
                          for key, initial in ((DOOR_INPUT, False), (SWITCH_INPUT, False),
                                               (FLAKY_AVAILABLE, True))},
        "input_select": {entity: {"name": entity, "options": list(MODE_OPTIONS), "initial": MODE_OPTIONS[0]},
                         UNIT_INPUT.split(".")[1]: {"name": UNIT_INPUT.split(".")[1], "options": list(UNIT_OPTIONS),
                                                    "initial": UNIT_OPTIONS[0]}},
        "template": [{
            "sensor": [*(_template_sensor(n) for n in NUMBERS),
                       {"name": entity, "unique_id": "hats_heating_mode", "device_class": "enum",
                        "state": f"{{{{ states('{MODE_INPUT}') }}}}",
                        "attributes": {"options": f"{{{{ state_attr('{MODE_INPUT}', 'options') }}}}"}}],
            "binary_sensor": [{"name": DOOR.split(".")[1], "unique_id": "hats_front_door", "device_class": "door",
                               "state": f"{{{{ is_state('{DOOR_INPUT}', 'on') }}}}"}],
        }],
        "switch": [{"platform": "template", "switches": {SWITCH.split(".")[1]: {
            "value_template": f"{{{{ is_state('{SWITCH_INPUT}', 'on') }}}}",
            "turn_on": {"service": "input_boolean.turn_on", "target": {"entity_id": SWITCH_INPUT}},
            "turn_off": {"service": "input_boolean.turn_off", "target": {"entity_id": SWITCH_INPUT}},
        }}}],
    }


def domains() -> list[str]:
    """Every integration domain this config (and its config entries) sets up."""
    return sorted({*configuration(0, "x", "y"), *CONFIG_ENTRY_DOMAINS, "template", "onboarding"} - {"homeassistant"})


def to_yaml(value: object, indent: int = 0) -> str:
    """Block-style YAML for dicts, lists and JSON scalars (strings JSON-quoted, so templates stay intact)."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "\n".join(f"{pad}{_key(str(k))}:" + _nested(v, indent + 1) for k, v in value.items())
    if isinstance(value, list):
        if not value:
            return "[]"
        return "\n".join(f"{pad}-" + _nested(v, indent + 1) for v in value)
    return json.dumps(value, ensure_ascii=False)


def _key(key: str) -> str:
    return key if _PLAIN_KEY.fullmatch(key) and key not in _YAML_WORDS else json.dumps(key)


def _nested(value: object, indent: int) -> str:
    if isinstance(value, dict | list) and value:
        return "\n" + to_yaml(value, indent)
    return " " + to_yaml(value, indent)


def write(config_dir: Path, port: int, statestream_base: str, eventstream_topic: str) -> Path:
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / "configuration.yaml"
    text = to_yaml(configuration(port, statestream_base, eventstream_topic))
    path.write_text(f"# Written by devstack/home_assistant/config.py for this session: edit that file.\n{text}\n")
    return path
