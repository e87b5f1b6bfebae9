"""The fleet: N physical devices with their entities, names, Zigbee addresses and publishing format.

Everything is derived from the seed, and independently of the formats: device `i` has the same kind,
name and values whichever format it publishes in, so a comparison across formats is meaningful.
Kinds are assigned round-robin; formats in a Latin square over the kinds (device `i` of kind
`i % K` gets format `(i % K + i // K) % F`), so every kind appears in every format in any fleet of
`K × F` devices.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from ha_simulator.kinds import KINDS, DeviceKind, EntitySpec
from ha_simulator.models import Model, make_model

IEEE_SUFFIX_BITS: Final = 40
IEEE_SUFFIX_MASK: Final = (1 << IEEE_SUFFIX_BITS) - 1
# value_template spellings real discovery devices use (shared DESIGN.md); the first dominates.
TEMPLATE_STYLES: Final = ("attr", "single_quotes", "double_quotes", "filter", "round")
TEMPLATE_WEIGHTS: Final = (6, 1, 1, 1, 1)


class Format(StrEnum):
    """How a device's states reach MQTT (see shared DESIGN.md, "What Home Assistant really sends")."""

    STATESTREAM = "statestream"
    EVENTSTREAM = "eventstream"
    DISCOVERY = "discovery"


ALL_FORMATS: Final[tuple[Format, ...]] = (Format.STATESTREAM, Format.EVENTSTREAM, Format.DISCOVERY)


@dataclass(frozen=True, slots=True)
class Entity:
    """A Home Assistant entity of a device; `index` numbers it across the whole fleet."""

    index: int
    spec: EntitySpec
    object_id: str
    entity_id: str
    friendly_name: str


@dataclass(slots=True)
class Device:
    """One physical device, its seeded generator and model, and where it is in the schedule."""

    index: int
    kind: DeviceKind
    name: str
    ieee: str
    fmt: Format
    rng: random.Random
    model: Model
    entities: tuple[Entity, ...]
    quoted_state: bool
    template_style: str
    next_us: int
    last_us: int
    offline: bool = field(default=False)


def assign_format(index: int, formats: tuple[Format, ...]) -> Format:
    """Round-robin over kinds, shifted by one each round, so formats mix across kinds."""
    kinds = len(KINDS)
    return formats[(index % kinds + index // kinds) % len(formats)]


def build_fleet(size: int, seed: int, start_us: int, formats: tuple[Format, ...], *,
                quoted_state_fraction: float, meter_resets_per_day: float) -> list[Device]:
    """`size` devices, the same ones for the same seed and start; first reports spread over one cadence."""
    if not formats:
        raise ValueError("at least one format is needed")
    master = random.Random(seed)
    ieee_salt = master.getrandbits(IEEE_SUFFIX_BITS)
    devices: list[Device] = []
    entity_index = 0
    for index in range(size):
        kind = KINDS[index % len(KINDS)]
        rng = random.Random(master.getrandbits(64))
        name = f"{kind.name}_{index:05d}"
        entities = []
        for spec in kind.entities:
            object_id = f"{name}_{spec.key}"
            entities.append(Entity(entity_index, spec, object_id, f"{spec.component}.{object_id}",
                                   f"{name} {spec.name}"))
            entity_index += 1
        quoted = rng.random() < quoted_state_fraction
        style = rng.choices(TEMPLATE_STYLES, TEMPLATE_WEIGHTS)[0]
        first_us = start_us + int(rng.uniform(0, kind.cadence_s) * 1_000_000)
        devices.append(Device(
            index=index, kind=kind, name=name,
            ieee=f"0x{kind.ieee_oui:06x}{(index ^ ieee_salt) & IEEE_SUFFIX_MASK:010x}",
            fmt=assign_format(index, formats), rng=rng,
            model=make_model(kind, rng, start_us, meter_resets_per_day),
            entities=tuple(entities), quoted_state=quoted, template_style=style,
            next_us=first_us, last_us=start_us,
        ))
    return devices
