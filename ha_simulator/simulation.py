"""The pure core: a seeded fleet stepped through simulated time, yielding every MQTT message in the
order it is published. No network, no clock: the same config and start give byte-identical output,
however the caller slices time (backfill, live ticks) — which is what tests and benchmarks rely on.

Devices sit in a heap by their next report (O(log N) per reading, nothing O(N) per message); messages
held back as late or out of order wait in a second heap until their publication time.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

from ha_simulator.const import (
    DEFAULT_DEVICES,
    DEFAULT_DROPOUTS_PER_HOUR,
    DEFAULT_LATE_FRACTION,
    DEFAULT_METER_RESETS_PER_DAY,
    DEFAULT_OUT_OF_ORDER_FRACTION,
    DEFAULT_SEED,
    DROPOUT_MAX_S,
    DROPOUT_MIN_S,
    LATE_DELAY_MAX_S,
    LATE_DELAY_MIN_S,
    MAX_DELAY_FRACTION,
    MAX_DEVICES,
    MAX_EVENT_PROBABILITY,
    OTHER_EVENT_FRACTION,
    OUT_OF_ORDER_EXTRA_MAX_S,
    OUT_OF_ORDER_EXTRA_MIN_S,
    QUOTED_STATE_FRACTION,
    STATESTREAM_ATTRIBUTES_ALWAYS,
    STATESTREAM_ATTRIBUTES_ONCE,
)
from ha_simulator.fleet import ALL_FORMATS, Device, Format, build_fleet
from ha_simulator.messages import EPOCH, Encoder, Message, Topics, birth_messages, make_encoder
from ha_simulator.models import HOUR_S, US_PER_S


class Delay(StrEnum):
    """Whether a state is published when it happened, minutes later, or after the entity's next state."""

    NONE = "none"
    LATE = "late"
    OUT_OF_ORDER = "out_of_order"


class Batch(NamedTuple):
    """The messages of one entity state (or one device JSON, or one other event), published together.

    `timestamp_us` is the state's own time (its `last_updated` / `last_seen`); `emit_us` the simulated
    time it is published at — later than `timestamp_us` for a delayed batch."""

    emit_us: int
    timestamp_us: int
    fmt: Format
    delay: Delay
    entities: tuple[int, ...]
    available: bool
    messages: tuple[Message, ...]

    @property
    def is_state(self) -> bool:
        return bool(self.entities)


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """Everything that decides the message sequence besides the start time."""

    devices: int = DEFAULT_DEVICES
    seed: int = DEFAULT_SEED
    formats: tuple[Format, ...] = ALL_FORMATS
    topics: Topics = field(default_factory=Topics)
    late_fraction: float = DEFAULT_LATE_FRACTION
    out_of_order_fraction: float = DEFAULT_OUT_OF_ORDER_FRACTION
    dropouts_per_hour: float = DEFAULT_DROPOUTS_PER_HOUR
    meter_resets_per_day: float = DEFAULT_METER_RESETS_PER_DAY
    statestream_attributes: str = STATESTREAM_ATTRIBUTES_ONCE
    quoted_state_fraction: float = QUOTED_STATE_FRACTION
    other_event_fraction: float = OTHER_EVENT_FRACTION

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.devices <= MAX_DEVICES:
            problems.append(f"devices must be 1-{MAX_DEVICES}, not {self.devices}")
        if not self.formats or len(set(self.formats)) != len(self.formats):
            problems.append("formats must be a non-empty list without repeats")
        for name in ("late_fraction", "out_of_order_fraction"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_DELAY_FRACTION:
                problems.append(f"{name} must be 0-{MAX_DELAY_FRACTION}, not {value}")
        for name in ("quoted_state_fraction", "other_event_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must be 0-1")
        for name in ("dropouts_per_hour", "meter_resets_per_day"):
            if getattr(self, name) < 0:
                problems.append(f"{name} cannot be negative")
        if self.statestream_attributes not in (STATESTREAM_ATTRIBUTES_ONCE, STATESTREAM_ATTRIBUTES_ALWAYS):
            problems.append(f"statestream_attributes must be {STATESTREAM_ATTRIBUTES_ONCE!r} or "
                            f"{STATESTREAM_ATTRIBUTES_ALWAYS!r}")
        if problems:
            raise ValueError("; ".join(problems))


def to_us(at: datetime) -> int:
    """Microseconds since the epoch, exactly (no float rounding): the simulation's clock unit."""
    if at.tzinfo is None:
        raise ValueError("the simulation needs an aware datetime (UTC)")
    return (at - EPOCH) // timedelta(microseconds=1)


def from_us(t_us: int) -> datetime:
    return EPOCH + timedelta(microseconds=t_us)


class Simulation:
    """A fleet stepped through simulated time. `announce()` first, then `batches_until()` repeatedly."""

    def __init__(self, config: SimulationConfig, start: datetime) -> None:
        self.config = config
        self.start_us = to_us(start.astimezone(UTC))
        self.devices: list[Device] = build_fleet(
            config.devices, config.seed, self.start_us, config.formats,
            quoted_state_fraction=config.quoted_state_fraction, meter_resets_per_day=config.meter_resets_per_day)
        attributes_always = config.statestream_attributes == STATESTREAM_ATTRIBUTES_ALWAYS
        self._encoders: list[Encoder] = [
            make_encoder(device, config.topics, attributes_always=attributes_always,
                         other_event_fraction=config.other_event_fraction)
            for device in self.devices]
        self.entity_ids: list[str] = [entity.entity_id for device in self.devices for entity in device.entities]
        self.entity_formats: list[Format] = [device.fmt for device in self.devices for _ in device.entities]
        self._due: list[tuple[int, int]] = [(device.next_us, device.index) for device in self.devices]
        heapq.heapify(self._due)
        self._held: list[tuple[int, int, Batch]] = []  # (emit_us, sequence, batch): delayed batches
        self._sequence = 0
        self._late = config.late_fraction
        self._late_or_disordered = config.late_fraction + config.out_of_order_fraction
        self._dropout_per_us = config.dropouts_per_hour / (HOUR_S * US_PER_S)
        self.now_us = self.start_us

    @property
    def meter_resets(self) -> int:
        """Meter resets generated so far (a reset shows in the data at the meter's next reading)."""
        return sum(device.model.resets for device in self.devices)

    @property
    def held(self) -> int:
        """Delayed batches generated but not yet due for publication."""
        return len(self._held)

    def announce(self) -> list[Message]:
        """The retained messages published once at start: birth, discovery configs, availability,
        statestream attributes."""
        messages = birth_messages(self.config.topics, {device.fmt for device in self.devices})
        for encoder in self._encoders:
            messages.extend(encoder.announce())
        return messages

    def batches_until(self, until_us: int) -> Iterator[Batch]:
        """Every batch published before `until_us`, in publication order. Stopping early loses only
        the batches not yet yielded; the schedule itself stays consistent."""
        due = self._due
        held = self._held
        while True:
            next_device = due[0][0] if due else until_us
            next_held = held[0][0] if held else until_us
            if next_held <= next_device:
                if next_held >= until_us:
                    break
                self.now_us = next_held
                yield heapq.heappop(held)[2]
                continue
            if next_device >= until_us:
                break
            t_us, index = heapq.heappop(due)
            self.now_us = t_us
            ready = self._step(self.devices[index], t_us)
            heapq.heappush(due, (self.devices[index].next_us, index))
            yield from ready
        self.now_us = max(self.now_us, until_us)

    def _step(self, device: Device, t_us: int) -> list[Batch]:
        """One report of `device` at `t_us`: a dropout, a return, or a reading (maybe held back)."""
        encoder = self._encoders[device.index]
        rng = device.rng
        fmt = device.fmt
        back_online = device.offline
        if back_online:
            device.offline = False
            device.model.restarted()
        elif rng.random() < min(MAX_EVENT_PROBABILITY, self._dropout_per_us * (t_us - device.last_us)):
            device.offline = True
            device.last_us = t_us
            device.next_us = t_us + int(rng.uniform(DROPOUT_MIN_S, DROPOUT_MAX_S) * US_PER_S)
            return [Batch(t_us, t_us, fmt, Delay.NONE, part.entities, part.available, part.messages)
                    for part in encoder.unavailable(t_us)]
        states = device.model.states(t_us)
        device.last_us = t_us
        device.next_us = t_us + max(1, int(device.model.next_interval_s() * US_PER_S))
        draw = rng.random()
        if draw < self._late:
            delay, emit_us = Delay.LATE, t_us + int(rng.uniform(LATE_DELAY_MIN_S, LATE_DELAY_MAX_S) * US_PER_S)
        elif draw < self._late_or_disordered:
            # After the device's next report: that entity's states then arrive out of order.
            extra_s = rng.uniform(OUT_OF_ORDER_EXTRA_MIN_S, OUT_OF_ORDER_EXTRA_MAX_S)
            delay, emit_us = Delay.OUT_OF_ORDER, device.next_us + int(extra_s * US_PER_S)
        else:
            delay, emit_us = Delay.NONE, t_us
        batches = [Batch(emit_us, t_us, fmt, delay, part.entities, part.available, part.messages)
                   for part in encoder.reading(t_us, states, back_online)]
        if delay is Delay.NONE:
            return batches
        for batch in batches:
            self._sequence += 1
            heapq.heappush(self._held, (emit_us, self._sequence, batch))
        return []
