"""What a run published, exactly: tests and benchmarks compare what arrived downstream with these
counts, and `hats run` waits until InfluxDB holds them (see `points`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ha_simulator.fleet import Format
from ha_simulator.messages import Message, Role
from ha_simulator.simulation import Batch, Delay, from_us


@dataclass(frozen=True, slots=True)
class EntityStats:
    """One entity's published states; `unavailable` of them were `unavailable` (no value)."""

    format: str
    states: int
    unavailable: int

    @property
    def values(self) -> int:
        return self.states - self.unavailable


@dataclass(slots=True)
class Stats:
    """Counters of one run. A *state message* carries entity states (see `ha_simulator.messages`);
    every MQTT publish, retained configs included, counts in `mqtt_messages`."""

    entity_ids: list[str]
    entity_formats: list[Format]
    state_messages: int = 0
    mqtt_messages: int = 0
    backfill_state_messages: int = 0
    late: int = 0
    out_of_order: int = 0
    meter_resets: int = 0
    by_format: dict[str, int] = field(default_factory=lambda: {fmt.value: 0 for fmt in Format})
    by_role: dict[str, int] = field(default_factory=lambda: {role.value: 0 for role in Role})
    first_timestamp_us: int | None = None
    last_timestamp_us: int | None = None
    elapsed_s: float = 0.0
    interrupted: bool = False
    _states: list[int] = field(default_factory=list, init=False, repr=False)
    _unavailable: list[int] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._states = [0] * len(self.entity_ids)
        self._unavailable = [0] * len(self.entity_ids)

    def record_messages(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self.by_role[message.role] += 1
        self.mqtt_messages += len(messages)

    def record(self, batch: Batch) -> None:
        """Count one batch that has been handed to the broker."""
        self.record_messages(batch.messages)
        if not batch.entities:
            return
        self.state_messages += 1
        self.by_format[batch.fmt] += 1
        if batch.delay is Delay.LATE:
            self.late += 1
        elif batch.delay is Delay.OUT_OF_ORDER:
            self.out_of_order += 1
        states = self._states
        for entity in batch.entities:
            states[entity] += 1
        if not batch.available:
            for entity in batch.entities:
                self._unavailable[entity] += 1
        stamp = batch.timestamp_us
        if self.first_timestamp_us is None or stamp < self.first_timestamp_us:
            self.first_timestamp_us = stamp
        if self.last_timestamp_us is None or stamp > self.last_timestamp_us:
            self.last_timestamp_us = stamp

    @property
    def entities(self) -> dict[str, EntityStats]:
        return {entity_id: EntityStats(fmt.value, self._states[i], self._unavailable[i])
                for i, (entity_id, fmt) in enumerate(zip(self.entity_ids, self.entity_formats, strict=True))}

    @property
    def points(self) -> int:
        """Entity values published (states other than `unavailable`): one raw point each downstream."""
        return sum(self._states) - sum(self._unavailable)

    @property
    def unavailable(self) -> int:
        return sum(self._unavailable)

    def to_json(self) -> dict[str, object]:
        def iso(t_us: int | None) -> str | None:
            return None if t_us is None else from_us(t_us).isoformat()

        return {
            "state_messages": self.state_messages,
            "mqtt_messages": self.mqtt_messages,
            "backfill_state_messages": self.backfill_state_messages,
            "points": self.points,
            "unavailable": self.unavailable,
            "late": self.late,
            "out_of_order": self.out_of_order,
            "meter_resets": self.meter_resets,
            "by_format": dict(self.by_format),
            "by_role": dict(self.by_role),
            "first_timestamp": iso(self.first_timestamp_us),
            "last_timestamp": iso(self.last_timestamp_us),
            "elapsed_s": round(self.elapsed_s, 3),
            "interrupted": self.interrupted,
            "entities": {entity_id: {"format": s.format, "states": s.states, "unavailable": s.unavailable}
                         for entity_id, s in self.entities.items()},
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n")
