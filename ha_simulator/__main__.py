"""`python -m ha_simulator`: publish a simulated Home Assistant fleet (broker settings from the environment:
HATS_MQTT_HOST, HATS_MQTT_PORT, HATS_MQTT_PUBLISHER_USERNAME/PASSWORD; `--dry-run` needs none)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from types import FrameType

from ha_simulator.const import (
    DEFAULT_DEVICES,
    DEFAULT_DISCOVERY_PREFIX,
    DEFAULT_DROPOUTS_PER_HOUR,
    DEFAULT_EVENTSTREAM_TOPIC,
    DEFAULT_LATE_FRACTION,
    DEFAULT_METER_RESETS_PER_DAY,
    DEFAULT_OUT_OF_ORDER_FRACTION,
    DEFAULT_SEED,
    DEFAULT_STATESTREAM_BASE,
    DEFAULT_ZIGBEE_BASE,
    EVENTSTREAM_TOPIC_ENV,
    MAX_DEVICES,
    PROGRESS_EVERY_S,
    STATESTREAM_ATTRIBUTES_ALWAYS,
    STATESTREAM_ATTRIBUTES_ONCE,
)
from ha_simulator.fleet import ALL_FORMATS, Format
from ha_simulator.messages import Topics
from ha_simulator.publish import NullSink, Publisher, RunOptions, Sink, Target, run
from ha_simulator.simulation import SimulationConfig
from ingest_worker.tls import mqtt_context

BROKER_ENV = ("HATS_MQTT_PORT", "HATS_MQTT_PUBLISHER_USERNAME", "HATS_MQTT_PUBLISHER_PASSWORD")
EXIT_USAGE = 2


def _formats(text: str) -> tuple[Format, ...]:
    names = [name.strip().removeprefix("mqtt_") for name in text.split(",") if name.strip()]
    try:
        return tuple(Format(name) for name in names)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"formats are a comma-separated list of {', '.join(ALL_FORMATS)}, not {text!r}") from None


def _start(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError("give the start with its UTC offset, e.g. 2026-01-01T00:00:00+00:00")
    return at


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ha_simulator", description=__doc__)
    fleet = p.add_argument_group("fleet (same seed and start: the same messages, byte for byte)")
    fleet.add_argument("--devices", type=int, default=DEFAULT_DEVICES, help=f"fleet size (1-{MAX_DEVICES})")
    fleet.add_argument("--seed", type=int, default=DEFAULT_SEED, help="same seed, same fleet and values")
    fleet.add_argument("--formats", type=_formats, default=ALL_FORMATS,
                       help="comma-separated statestream,eventstream,discovery; devices take them in turn "
                            "(default: all three)")
    fleet.add_argument("--start", type=_start, default=None,
                       help="simulated start of the backfill, ISO 8601 with offset (default: now - backfill)")
    fleet.add_argument("--late-fraction", type=float, default=DEFAULT_LATE_FRACTION,
                       help="share of readings published 2-15 minutes late")
    fleet.add_argument("--out-of-order-fraction", type=float, default=DEFAULT_OUT_OF_ORDER_FRACTION,
                       help="share of readings published after the device's next one")
    fleet.add_argument("--dropouts-per-hour", type=float, default=DEFAULT_DROPOUTS_PER_HOUR,
                       help="per device: how often it goes `unavailable` (for 2-20 minutes)")
    fleet.add_argument("--meter-resets-per-day", type=float, default=DEFAULT_METER_RESETS_PER_DAY,
                       help="per energy meter: how often its counter restarts near zero")
    fleet.add_argument("--statestream-attributes", default=STATESTREAM_ATTRIBUTES_ONCE,
                       choices=(STATESTREAM_ATTRIBUTES_ONCE, STATESTREAM_ATTRIBUTES_ALWAYS),
                       help="statestream attributes retained once at start, or with every state as HA does")
    topics = p.add_argument_group("topics (each prefixed with --tenant-prefix)")
    topics.add_argument("--tenant-prefix", default="", help="e.g. hats/acme")
    topics.add_argument("--statestream-base", default=DEFAULT_STATESTREAM_BASE)
    topics.add_argument("--eventstream-topic", "--topic", dest="eventstream_topic",
                        default=os.environ.get(EVENTSTREAM_TOPIC_ENV, DEFAULT_EVENTSTREAM_TOPIC),
                        help=f"default: ${EVENTSTREAM_TOPIC_ENV} or {DEFAULT_EVENTSTREAM_TOPIC}")
    topics.add_argument("--discovery-prefix", default=DEFAULT_DISCOVERY_PREFIX)
    topics.add_argument("--zigbee-base", default=DEFAULT_ZIGBEE_BASE)
    pacing = p.add_argument_group("pacing and stopping")
    pacing.add_argument("--backfill-hours", type=float, default=0.0, help="history to publish first, at full speed")
    pacing.add_argument("--duration", type=float, default=None,
                        help="seconds of live traffic after the backfill (default: forever; 0: none)")
    pacing.add_argument("--count", type=int, default=None,
                        help="stop right after this many state messages (after the backfill, live traffic "
                             "continues towards it unless --duration ends first)")
    pacing.add_argument("--rate", type=float, default=None, help="at most this many MQTT messages per second")
    pacing.add_argument("--speed", type=float, default=1.0, help="simulated seconds per second in live mode")
    pacing.add_argument("--progress-every", type=float, default=PROGRESS_EVERY_S, help="seconds between progress lines")
    output = p.add_argument_group("output")
    output.add_argument("--stats-json", type=Path, default=None, help="write the run's counts here at the end")
    output.add_argument("--dry-run", action="store_true", help="generate without a broker (measures generation)")
    return p


class _StopOnSignal:
    """SIGTERM (how `hats down` stops the live simulator) and Ctrl-C stop the run between two batches —
    drained, counted, reported; a second signal interrupts at once."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        config = SimulationConfig(
            devices=args.devices, seed=args.seed, formats=args.formats,
            topics=Topics(args.statestream_base, args.eventstream_topic, args.discovery_prefix, args.zigbee_base,
                          args.tenant_prefix),
            late_fraction=args.late_fraction, out_of_order_fraction=args.out_of_order_fraction,
            dropouts_per_hour=args.dropouts_per_hour, meter_resets_per_day=args.meter_resets_per_day,
            statestream_attributes=args.statestream_attributes)
        options = RunOptions(backfill_hours=args.backfill_hours, duration_s=args.duration, count=args.count,
                             rate=args.rate, speed=args.speed, start=args.start,
                             progress_every_s=args.progress_every)
    except ValueError as exc:
        p.error(str(exc))
    sink: Sink
    if args.dry_run:
        sink = NullSink()
    else:
        missing = [name for name in BROKER_ENV if not os.environ.get(name)]
        if missing:
            print(f"ha_simulator: {', '.join(missing)} not set; source the stack's env (`. .hats/env`)",
                  file=sys.stderr)
            return EXIT_USAGE
        target = Target(os.environ.get("HATS_MQTT_HOST", "127.0.0.1"), int(os.environ["HATS_MQTT_PORT"]),
                        os.environ["HATS_MQTT_PUBLISHER_USERNAME"], os.environ["HATS_MQTT_PUBLISHER_PASSWORD"],
                        config.topics.events, mqtt_context(os.environ))
        # The account's own name: the broker refuses a home's (or the demo's) account any other client id,
        # so two simulators on one account take each other's connection; give each its own account.
        sink = Publisher(target)
    handler = _StopOnSignal()
    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        stats = run(sink, config, options, stop=handler.event)
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)
    if args.stats_json is not None:
        stats.write_json(args.stats_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
