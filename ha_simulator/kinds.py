"""The physical device kinds a Home Assistant home really has, and the entities each one exposes.

A kind is static catalogue data (what zigbee2mqtt's discovery would announce); how its values evolve
over time lives in `models.py`. Every kind is published in any of the three formats, exactly as a real
home running zigbee2mqtt plus mqtt_statestream or mqtt_eventstream would see it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

SENSOR: Final = "sensor"
BINARY_SENSOR: Final = "binary_sensor"
MEASUREMENT: Final = "measurement"
TOTAL_INCREASING: Final = "total_increasing"

# zigbee2mqtt's contact property is true when the door is *closed*; Home Assistant's `on` means open.
CONTACT_JSON: Final = {"on": "false", "off": "true"}


@dataclass(frozen=True, slots=True)
class EntitySpec:
    """One entity of a device: its zigbee2mqtt JSON key and what Home Assistant knows about it."""

    key: str
    name: str
    component: str = SENSOR
    device_class: str | None = None
    unit: str | None = None
    state_class: str | None = MEASUREMENT
    integer: bool = False
    # For binary sensors: the JSON literal zigbee2mqtt publishes for each Home Assistant state.
    json_for_state: dict[str, str] | None = None
    # Further discovery config keys zigbee2mqtt sends for this entity (payload_on, icon, ...).
    extra_config: tuple[tuple[str, object], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class DeviceKind:
    """A physical device model: manufacturer data for the discovery `device` block, and its cadence."""

    name: str
    model: str
    manufacturer: str
    ieee_oui: int
    cadence_s: float
    entities: tuple[EntitySpec, ...]


BATTERY: Final = EntitySpec("battery", "Battery", device_class="battery", unit="%", integer=True,
                            extra_config=(("entity_category", "diagnostic"),))
LINKQUALITY: Final = EntitySpec("linkquality", "Linkquality", unit="lqi", integer=True,
                                extra_config=(("entity_category", "diagnostic"), ("icon", "mdi:signal")))

# An indoor Aqara sensor: reports on change, roughly every two minutes.
CLIMATE: Final = DeviceKind(
    "climate", "Temperature and humidity sensor (WSDCGQ11LM)", "Aqara", 0x00158D, 120.0,
    (EntitySpec("temperature", "Temperature", device_class="temperature", unit="°C"),
     EntitySpec("humidity", "Humidity", device_class="humidity", unit="%"),
     BATTERY, LINKQUALITY),
)
# An outdoor sensor configured for °F (a US home): the ingest path must convert to °C.
OUTDOOR: Final = DeviceKind(
    "outdoor", "Temperature and humidity sensor (SNZB-02)", "SONOFF", 0x00124B, 60.0,
    (EntitySpec("temperature", "Temperature", device_class="temperature", unit="°F"),
     EntitySpec("humidity", "Humidity", device_class="humidity", unit="%"),
     BATTERY, LINKQUALITY),
)
# A smart plug: power every ten seconds and a lifetime energy counter in kWh.
PLUG: Final = DeviceKind(
    "plug", "Smart plug (TS011F_plug_1)", "TuYa", 0xA4C138, 10.0,
    (EntitySpec("power", "Power", device_class="power", unit="W"),
     EntitySpec("energy", "Energy", device_class="energy", unit="kWh", state_class=TOTAL_INCREASING),
     LINKQUALITY),
)
# A whole-home meter in kW and Wh (units the ingest path converts to W and kWh); its counter resets.
METER: Final = DeviceKind(
    "meter", "Energy meter (Pro 3EM)", "Shelly", 0xE8DB84, 30.0,
    (EntitySpec("power", "Power", device_class="power", unit="kW"),
     EntitySpec("energy", "Energy", device_class="energy", unit="Wh", state_class=TOTAL_INCREASING)),
)
# A door contact: event driven (opens, closes), plus zigbee's hourly check-in.
DOOR: Final = DeviceKind(
    "door", "Door and window sensor (MCCGQ11LM)", "Aqara", 0x00158D, 3_000.0,
    (EntitySpec("contact", "Door", component=BINARY_SENSOR, device_class="door", state_class=None,
                json_for_state=CONTACT_JSON, extra_config=(("payload_on", False), ("payload_off", True))),
     BATTERY, LINKQUALITY),
)

# Round-robin order of kinds in a fleet (index % len): every kind appears in any fleet of five.
KINDS: Final[tuple[DeviceKind, ...]] = (CLIMATE, PLUG, DOOR, METER, OUTDOOR)
