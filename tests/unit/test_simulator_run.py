"""The publishing shell, without a broker: `--count` stops after exactly N state messages, the stats
match what reached the sink, the CLI writes them as JSON, and the summary line keeps the format
`hats run` parses."""

from __future__ import annotations

import io
import json
import signal
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ha_simulator.__main__ import _StopOnSignal, main
from ha_simulator.fleet import ALL_FORMATS, Format
from ha_simulator.messages import Topics
from ha_simulator.publish import RunOptions, run
from ha_simulator.simulation import SimulationConfig
from ha_simulator.stats import Stats

START = datetime(2026, 2, 1, tzinfo=UTC)
START_ARG = START.isoformat()


class Recorder:
    """A sink that keeps every message, as the broker would receive them."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.closed = False

    def publish(self, payload: bytes, topic: str | None = None, retain: bool = False) -> None:
        assert topic is not None
        self.messages.append((topic, payload, retain))

    def close(self) -> None:
        self.closed = True


def state_format(topics: Topics, topic: str, payload: bytes) -> Format | None:
    """The format of a state message as a consumer tells it from the wire; None for any other message."""
    if topic == topics.events:
        return Format.EVENTSTREAM if json.loads(payload)["event_type"] == "state_changed" else None
    if topic.startswith(topics.statestream + "/"):
        return Format.STATESTREAM if topic.endswith("/state") else None
    if topic.startswith(topics.zigbee + "/") and topic != topics.bridge_state:
        if topic.endswith("/availability"):
            return Format.DISCOVERY if payload == b'{"state":"offline"}' else None
        return Format.DISCOVERY
    return None


def record(config: SimulationConfig, options: RunOptions) -> tuple[Recorder, Stats, str]:
    sink, out = Recorder(), io.StringIO()
    stats = run(sink, config, options, out=out)
    return sink, stats, out.getvalue()


@pytest.mark.parametrize("count", [1, 2, 997, 25_000])
def test_count_stops_after_exactly_n_state_messages(count: int) -> None:
    config = SimulationConfig(devices=50, late_fraction=0.05, out_of_order_fraction=0.05, dropouts_per_hour=0.5)
    sink, stats, _ = record(config, RunOptions(backfill_hours=24, duration_s=0, count=count, start=START))
    on_wire = Counter(state_format(config.topics, topic, payload) for topic, payload, _ in sink.messages)
    assert sum(n for fmt, n in on_wire.items() if fmt is not None) == count
    assert stats.state_messages == count
    assert sink.closed


def test_count_is_reached_in_live_mode_too() -> None:
    """With no backfill, a fast-forwarded live fleet also stops at exactly N."""
    config = SimulationConfig(devices=20)
    sink, stats, _ = record(config, RunOptions(count=300, speed=1e7, start=START))
    assert stats.state_messages == 300
    assert sum(state_format(config.topics, t, p) is not None for t, p, _ in sink.messages) == 300


def test_stats_match_the_wire() -> None:
    config = SimulationConfig(devices=45, seed=5, dropouts_per_hour=0.5)
    sink, stats, _ = record(config, RunOptions(backfill_hours=6, duration_s=0, start=START))
    on_wire = Counter(state_format(config.topics, topic, payload) for topic, payload, _ in sink.messages)
    assert {fmt.value: on_wire[fmt] for fmt in ALL_FORMATS} == stats.by_format
    assert stats.mqtt_messages == len(sink.messages)
    assert sum(stats.by_role.values()) == stats.mqtt_messages
    assert stats.backfill_state_messages == stats.state_messages == sum(stats.by_format.values())
    entities = stats.entities
    assert set(entities) == set(stats.entity_ids)
    assert len(entities) > 100
    assert sum(e.values for e in entities.values()) == stats.points
    assert stats.unavailable > 0
    # A zigbee2mqtt device JSON carries all its entities: more values than state messages.
    assert stats.points > stats.state_messages
    plug = entities["sensor.plug_00001_power"]
    assert plug.format == "eventstream"
    assert 1_000 < plug.states <= 6 * 360  # every ten seconds; HA drops repeats of the same value
    assert stats.late > 0
    assert stats.out_of_order > 0
    assert stats.first_timestamp_us is not None
    assert stats.last_timestamp_us is not None


def test_cli_writes_stats_and_keeps_the_summary_line_hats_run_parses(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    stats_path = tmp_path / "stats.json"
    code = main(["--dry-run", "--devices", "20", "--backfill-hours", "2", "--duration", "0", "--start", START_ARG,
                 "--stats-json", str(stats_path), "--formats", "statestream,mqtt_eventstream,discovery"])
    assert code == 0
    stats = json.loads(stats_path.read_text())
    stderr = capsys.readouterr().err
    assert "simulator: backfilled 2.0 h with " in stderr
    published = int(stderr.split(" with ")[-1].split()[0])  # exactly as devstack/demo.py reads it
    assert published == stats["backfill_state_messages"] == stats["state_messages"] > 1_000
    assert set(stats["by_format"]) == {"statestream", "eventstream", "discovery"}
    assert stats["points"] == sum(e["states"] - e["unavailable"] for e in stats["entities"].values())


def test_cli_count_with_one_format(tmp_path: Path) -> None:
    stats_path = tmp_path / "stats.json"
    assert main(["--dry-run", "--devices", "100", "--backfill-hours", "5", "--duration", "0", "--count", "4321",
                 "--formats", "discovery", "--start", START_ARG, "--stats-json", str(stats_path)]) == 0
    stats = json.loads(stats_path.read_text())
    assert stats["state_messages"] == stats["by_format"]["discovery"] == 4321


def test_cli_without_broker_settings_says_what_to_source(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("HATS_MQTT_PORT", raising=False)
    assert main(["--devices", "5", "--duration", "0"]) == 2
    assert "HATS_MQTT_PORT" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--devices", "0"], ["--devices", "10001"], ["--formats", "carrier-pigeon"],
                                  ["--start", "2026-01-01T00:00:00"], ["--count", "0"], ["--speed", "0"]])
def test_cli_refuses_bad_options(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--dry-run", *argv])
    assert exited.value.code == 2


def test_rate_caps_the_publish_rate() -> None:
    rate = 5_000.0
    began = time.monotonic()
    sink, _stats, _ = record(SimulationConfig(devices=10),
                            RunOptions(backfill_hours=1, duration_s=0, count=400, rate=rate, start=START))
    elapsed = time.monotonic() - began
    assert len(sink.messages) > 500  # announcements, states and their timestamps
    assert elapsed >= (len(sink.messages) - 1) / rate * 0.95


class StoppingRecorder(Recorder):
    """Asks the run to stop after `after` messages, as a SIGTERM would."""

    def __init__(self, stop: threading.Event, after: int) -> None:
        super().__init__()
        self._stop, self._after = stop, after

    def publish(self, payload: bytes, topic: str | None = None, retain: bool = False) -> None:
        super().publish(payload, topic, retain)
        if len(self.messages) == self._after:
            self._stop.set()


def test_a_stop_request_ends_the_run_between_batches_with_exact_stats() -> None:
    config = SimulationConfig(devices=50)
    stop = threading.Event()
    sink = StoppingRecorder(stop, after=5_000)
    stats = run(sink, config, RunOptions(backfill_hours=24, duration_s=None, start=START), out=io.StringIO(),
                stop=stop)
    assert stats.interrupted
    assert sink.closed
    assert 5_000 <= len(sink.messages) < 5_010  # the batch in hand is finished, nothing after it
    assert stats.mqtt_messages == len(sink.messages)
    assert stats.state_messages == sum(state_format(config.topics, t, p) is not None for t, p, _ in sink.messages)


def test_the_first_signal_asks_to_stop_the_second_interrupts() -> None:
    handler = _StopOnSignal()
    handler(signal.SIGTERM, None)
    assert handler.event.is_set()
    with pytest.raises(KeyboardInterrupt):
        handler(signal.SIGINT, None)
