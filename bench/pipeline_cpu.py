"""The worker's CPU path alone — parse, normalise, validate, encode — over N state changes, no I/O.

Usage: .venv/bin/python bench/pipeline_cpu.py [--messages N] [--format eventstream|statestream]
Prints msg/s of `Pipeline.process` alone. To compare two versions, copy this file into a checkout of the
other (`git worktree add /tmp/old <rev>`) and run both alternately, several times each, on one machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest_worker.mqtt_link import Incoming  # noqa: E402
from ingest_worker.pipeline import Pipeline  # noqa: E402
from ingest_worker.sources.eventstream import EventstreamSource  # noqa: E402
from ingest_worker.sources.statestream import StatestreamSource  # noqa: E402
from ingest_worker.store.metadata import MetadataStore  # noqa: E402

# A large home: at this bench's pace each entity changes a few times a second, as busy sensors do.
ENTITIES = 10_000
BATCH = 2_000


def eventstream(n: int) -> list[Incoming]:
    items = []
    for i in range(n):
        entity = f"sensor.bench_{i % ENTITIES:04d}"
        at = f"2026-11-30T10:{(i // 60_000) % 60:02d}:{(i // 1000) % 60:02d}.{i % 1000:03d}000+00:00"
        state = {"entity_id": entity, "state": f"{i % 500 / 10:.1f}", "last_updated": at, "last_changed": at,
                 "attributes": {"unit_of_measurement": "W", "device_class": "power", "state_class": "measurement",
                                "friendly_name": f"Bench {i % ENTITIES}"}}
        payload = json.dumps({"event_type": "state_changed", "event_data": {"entity_id": entity, "new_state": state}})
        items.append(Incoming("homeassistant/events", payload.encode(), i, 1, 1, time.time_ns()))
    return items


def statestream(n: int) -> list[Incoming]:
    items = []
    base = "homeassistant/statestream/sensor"
    for i in range(n // 6):
        entity = f"bench_{i % ENTITIES:04d}"
        at = f"2026-11-30T10:{(i // 60_000) % 60:02d}:{(i // 1000) % 60:02d}.{i % 1000:03d}000+00:00"
        for leaf, payload in (("state", f"{i % 500 / 10:.1f}"), ("last_updated", at), ("last_changed", at),
                              ("unit_of_measurement", '"W"'), ("device_class", '"power"'),
                              ("state_class", '"measurement"')):
            items.append(Incoming(f"{base}/{entity}/{leaf}", payload.encode(), i, 1, 1, time.time_ns()))
    return items


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--format", choices=("eventstream", "statestream"), default="eventstream")
    args = parser.parse_args()
    items = eventstream(args.messages) if args.format == "eventstream" else statestream(args.messages)
    source = EventstreamSource("homeassistant/events") if args.format == "eventstream" \
        else StatestreamSource("homeassistant/statestream")
    metadata = MetadataStore("bench", 100_000)
    pipeline = Pipeline("bench", [source], None, metadata, None, "", None,  # type: ignore[arg-type]
                        262_144, 10**9, 60.0)
    started = time.perf_counter()
    for first in range(0, len(items), BATCH):
        pipeline.process(items[first:first + BATCH])
    pipeline.process([], force=True)
    elapsed = time.perf_counter() - started
    print(f"{args.format}: {len(items)} messages in {elapsed:.2f} s = {len(items) / elapsed:,.0f} msg/s, "
          f"{pipeline.counters}")


if __name__ == "__main__":
    main()
