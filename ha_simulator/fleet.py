"""Device kinds Home Assistant users really run, and the states they report over time."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Kind:
    domain: str
    device_class: str | None
    unit: str | None
    state_class: str | None
    cadence_s: float


KINDS: dict[str, Kind] = {
    "temperature": Kind("sensor", "temperature", "°C", "measurement", 60),
    "temperature_f": Kind("sensor", "temperature", "°F", "measurement", 60),
    "humidity": Kind("sensor", "humidity", "%", "measurement", 60),
    "power": Kind("sensor", "power", "W", "measurement", 10),
    "energy": Kind("sensor", "energy", "kWh", "total_increasing", 60),
    "door": Kind("binary_sensor", "door", None, None, 300),
    "battery": Kind("sensor", "battery", "%", "measurement", 600),
}


@dataclass(slots=True)
class Device:
    entity_id: str
    kind: Kind
    name: str
    rng: random.Random
    phase: float
    level: float = 0.0
    next_at: datetime = field(default_factory=datetime.now)

    def reading(self, at: datetime) -> str:
        """The state string at `at`: a smooth daily curve plus noise, or the kind's own behaviour."""
        hours = at.timestamp() / 3600
        daily = math.sin(2 * math.pi * (hours / 24) + self.phase)
        kind = self.kind
        if self.rng.random() < 0.005:
            return "unavailable"
        if kind.device_class == "temperature":
            celsius = 20 + 3 * daily + self.rng.gauss(0, 0.2)
            return f"{celsius * 9 / 5 + 32:.1f}" if kind.unit == "°F" else f"{celsius:.2f}"
        if kind.device_class == "humidity":
            return f"{min(100.0, max(0.0, 50 - 10 * daily + self.rng.gauss(0, 1))):.1f}"
        if kind.device_class == "power":
            return f"{max(0.0, 120 + 80 * daily + self.rng.gauss(0, 15)):.1f}"
        if kind.device_class == "energy":
            self.level += max(0.0, 0.002 + 0.001 * daily)
            if self.rng.random() < 0.001:  # a meter reset: a new cycle starts near zero
                self.level = 0.0
            return f"{self.level:.4f}"
        if kind.device_class == "door":
            return "on" if self.rng.random() < 0.1 else "off"
        if kind.device_class == "battery":
            self.level = max(0.0, self.level - 0.01)
            return f"{self.level:.0f}"
        raise ValueError(f"no behaviour for {kind}")


def build_fleet(size: int, seed: int, start: datetime) -> list[Device]:
    rng = random.Random(seed)
    names = sorted(KINDS)
    devices = []
    for index in range(size):
        kind_name = names[index % len(names)]
        kind = KINDS[kind_name]
        device = Device(
            entity_id=f"{kind.domain}.sim_{kind_name}_{index:05d}",
            kind=kind,
            name=f"Sim {kind_name.replace('_', ' ')} {index}",
            rng=random.Random(rng.getrandbits(64)),
            phase=rng.uniform(0, 2 * math.pi),
            level=100.0 if kind_name == "battery" else rng.uniform(0, 5000),
            next_at=start + timedelta(seconds=rng.uniform(0, kind.cadence_s)),
        )
        devices.append(device)
    return devices


def states_until(devices: list[Device], until: datetime) -> Iterator[tuple[Device, datetime, str]]:
    """Every state change due before `until`, in time order across the fleet (a heap: 10,000 devices)."""
    heap = [(device.next_at, index) for index, device in enumerate(devices)]
    heapq.heapify(heap)
    while heap and heap[0][0] < until:
        at, index = heapq.heappop(heap)
        device = devices[index]
        yield device, at, device.reading(at)
        device.next_at = at + timedelta(seconds=device.kind.cadence_s * device.rng.uniform(0.9, 1.1))
        heapq.heappush(heap, (device.next_at, index))
