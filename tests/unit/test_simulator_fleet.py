"""The simulated fleet is deterministic and scales: the same seed and start give byte-identical messages,
however time is sliced; another seed gives other messages; 10,000 devices build and run quickly."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from ha_simulator.fleet import ALL_FORMATS, Format
from ha_simulator.kinds import KINDS
from ha_simulator.simulation import Simulation, SimulationConfig, to_us

START = datetime(2026, 1, 1, tzinfo=UTC)
WIRE = tuple[str, bytes, bool]
BUILD_10K_BUDGET_S = 5.0


def wire(config: SimulationConfig, hours: float, *, slice_minutes: float | None = None) -> list[WIRE]:
    """Every message of `hours` as (topic, payload, retain), announcements first."""
    simulation = Simulation(config, START)
    out = [(m.topic, m.payload, m.retain) for m in simulation.announce()]
    end = to_us(START + timedelta(hours=hours))
    step = end - simulation.start_us if slice_minutes is None else int(slice_minutes * 60e6)
    until = simulation.start_us
    while until < end:
        until = min(end, until + step)
        out.extend((m.topic, m.payload, m.retain) for b in simulation.batches_until(until) for m in b.messages)
    return out


def test_same_seed_and_start_give_byte_identical_messages() -> None:
    config = SimulationConfig(devices=40, seed=7)
    first = wire(config, 2)
    assert len(first) > 5_000
    assert first == wire(config, 2)


def test_slicing_time_does_not_change_the_sequence() -> None:
    """Backfill in one go and live ticks of a few minutes publish the same bytes in the same order."""
    config = SimulationConfig(devices=30, seed=3, late_fraction=0.05, out_of_order_fraction=0.05)
    assert wire(config, 2) == wire(config, 2, slice_minutes=7.3)


def test_a_different_seed_gives_different_messages() -> None:
    first = wire(SimulationConfig(devices=20, seed=1), 1)
    second = wire(SimulationConfig(devices=20, seed=2), 1)
    assert first != second
    payloads_first = {payload for topic, payload, _ in first if topic.endswith("/state")}
    payloads_second = {payload for topic, payload, _ in second if topic.endswith("/state")}
    assert len(payloads_first & payloads_second) < len(payloads_first) / 2  # values differ, not only ids


def test_a_different_start_gives_different_timestamps() -> None:
    config = SimulationConfig(devices=10, seed=1)
    a = Simulation(config, START)
    b = Simulation(config, START + timedelta(days=1))
    first = [m.payload for batch in a.batches_until(a.start_us + 3_600_000_000) for m in batch.messages]
    second = [m.payload for batch in b.batches_until(b.start_us + 3_600_000_000) for m in batch.messages]
    assert first != second


def test_every_kind_appears_in_every_format() -> None:
    devices = Simulation(SimulationConfig(devices=len(KINDS) * len(ALL_FORMATS)), START).devices
    pairs = Counter((device.kind.name, device.fmt) for device in devices)
    assert set(pairs) == {(kind.name, fmt) for kind in KINDS for fmt in ALL_FORMATS}
    assert set(pairs.values()) == {1}


def test_formats_are_assigned_from_the_selection_only() -> None:
    devices = Simulation(SimulationConfig(devices=50, formats=(Format.EVENTSTREAM,)), START).devices
    assert {device.fmt for device in devices} == {Format.EVENTSTREAM}
    mixed = Simulation(SimulationConfig(devices=60, formats=(Format.DISCOVERY, Format.STATESTREAM)), START).devices
    assert Counter(device.fmt for device in mixed) == {Format.DISCOVERY: 30, Format.STATESTREAM: 30}


def test_values_do_not_depend_on_the_format() -> None:
    """Device i has the same readings whichever format carries them (format choice draws no randomness)."""
    def readings(fmt: Format) -> list[tuple[int, int, tuple[int, ...], bool]]:
        simulation = Simulation(SimulationConfig(devices=15, seed=9, formats=(fmt,)), START)
        return [(b.emit_us, b.timestamp_us, b.entities, b.available)
                for b in simulation.batches_until(simulation.start_us + 7_200_000_000) if b.entities]

    assert readings(Format.STATESTREAM) == readings(Format.EVENTSTREAM)


def test_ten_thousand_devices_build_and_run_quickly() -> None:
    began = time.perf_counter()
    simulation = Simulation(SimulationConfig(devices=10_000), START)
    announced = simulation.announce()
    built_s = time.perf_counter() - began
    assert built_s < BUILD_10K_BUDGET_S
    assert len({device.name for device in simulation.devices}) == 10_000
    assert len({device.ieee for device in simulation.devices}) == 10_000
    assert len(set(simulation.entity_ids)) == len(simulation.entity_ids)
    assert len(announced) > 10_000
    # One simulated minute of 10,000 devices: every plug (10 s cadence) reports about six times.
    batches = list(simulation.batches_until(simulation.start_us + 60_000_000))
    assert len(batches) > 10_000
    assert time.perf_counter() - began < 2 * BUILD_10K_BUDGET_S


@pytest.mark.parametrize("bad", [
    {"devices": 0}, {"devices": 10_001}, {"late_fraction": 0.9}, {"out_of_order_fraction": -0.1}, {"formats": ()},
    {"formats": (Format.DISCOVERY, Format.DISCOVERY)}, {"statestream_attributes": "sometimes"},
    {"dropouts_per_hour": -1.0},
])
def test_invalid_configs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
        SimulationConfig(**bad)  # type: ignore[arg-type]
