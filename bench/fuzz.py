"""100,000 hostile payloads through every parser and the worker's own pipeline: crashes, rejects by reason,
accepted points, and whether every accepted point reads back exactly.

Usage: .venv/bin/python bench/fuzz.py [--payloads 100000] [--seed 12] [--store]

Payloads are real Home Assistant messages (statestream bursts, eventstream events, discovery configs and
zigbee2mqtt states, WebSocket events / history rows / `get_states` states and coalesced frames, recorder
rows, the birth/will topic) and mutations of them: byte flips, truncations, splices of two messages, type
swaps (one JSON node replaced by a hostile value: NaN, 1e308, a lone surrogate, a 5,000-character string,
deep nesting…), plus hostile JSON generated from scratch. Each goes through `Pipeline.process` with every
source (the live worker's routing, dead letters and all), no I/O: the pipeline up to the points and the
dead-letter rows it would write (`Pipeline.discard`). Counted: crashes (an exception out of `process`, or a
dead letter of reason `internal_error`, i.e. a parser raising something other than `Rejected`: 0 expected),
dead letters by reason (each must carry a known reason and a detail), lines written, and lines that do not
read back (tests/lineprotocol_reader.py, independent of the encoder) to the same point when re-encoded.
Prints payloads/s of the whole run; exit status 1 on any crash or round-trip failure.

`--store`: the same payloads through the real worker's door (`door.py`: the pipeline wired to the test
stack's InfluxDB and PostgreSQL, as the dead-letter replay and the importer use it) for a throwaway tenant,
a flush per batch: the dead letters land in the real `ops.dead_letters` (every one must be there: rows
counted against the letters the flushes returned), the points in the tenant's InfluxDB database. The
tenant's rows and database are removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest_worker.contract import Point  # noqa: E402
from ingest_worker.door import Door  # noqa: E402
from ingest_worker.lineprotocol import encode  # noqa: E402
from ingest_worker.mqtt_link import Incoming  # noqa: E402
from ingest_worker.pipeline import Pipeline  # noqa: E402
from ingest_worker.rejections import Reason  # noqa: E402
from ingest_worker.sources.base import Source  # noqa: E402
from ingest_worker.sources.discovery import DiscoverySource  # noqa: E402
from ingest_worker.sources.eventstream import EventstreamSource  # noqa: E402
from ingest_worker.sources.recorder import RecorderSource, row_payload, state_topic  # noqa: E402
from ingest_worker.sources.statestream import StatestreamSource  # noqa: E402
from ingest_worker.sources.status import StatusSource  # noqa: E402
from ingest_worker.sources.websocket import EVENT_TOPIC, STATE_TOPIC, WebsocketSource, history_topic  # noqa: E402
from ingest_worker.store.metadata import MetadataStore  # noqa: E402
from tests.ha_strategies import HOSTILE_NUMBERS, HOSTILE_TEXT, deep  # noqa: E402
from tests.lineprotocol_reader import Unreadable, read_line  # noqa: E402

BATCH = 1_000
EVENTS = "homeassistant/events"
STATESTREAM = "homeassistant/statestream"
DISCOVERY = "homeassistant"
STATUS = "homeassistant/status"
Z2M = "zigbee2mqtt/weather_sensor"
KINDS = (("temperature", "°C", "measurement"), ("temperature", "°F", "measurement"), ("power", "kW", "measurement"),
         ("energy", "Wh", "total_increasing"), ("humidity", "%", "measurement"), ("battery", "%", "measurement"))
HOSTILE: tuple[object, ...] = (*HOSTILE_NUMBERS, *HOSTILE_TEXT, float("nan"), float("inf"), None, True, [], {},
                               deep(50), deep(2_000), "x" * 5_000, {"a": [1, {"b": None}]})


def sources() -> list[Source]:
    """The worker's routing order (sources/registry.py), every source on."""
    return [WebsocketSource(), RecorderSource(), StatusSource(STATUS), EventstreamSource(EVENTS),
            StatestreamSource(STATESTREAM), DiscoverySource(DISCOVERY)]


def real_messages(rng: random.Random, n: int) -> list[tuple[str, bytes]]:
    """`n` valid messages of every format, as HA and devices publish them."""
    out: list[tuple[str, bytes]] = []
    config = {"unit_of_measurement": "°C", "device_class": "temperature", "state_class": "measurement",
              "value_template": "{{ value_json.temperature }}", "state_topic": Z2M, "object_id": "weather_temp",
              "unique_id": "0x00178801_temperature", "device": {"identifiers": ["zigbee2mqtt_0x00178801"],
                                                                "name": "weather", "manufacturer": "Aqara"}}
    out.append((f"{DISCOVERY}/sensor/0x00178801/temperature/config", json.dumps(config).encode()))
    while len(out) < n:
        i = len(out)
        device_class, unit, state_class = rng.choice(KINDS)
        entity = f"sensor.fuzz_{i % 500}"
        at = f"2026-11-30T10:{i // 60_000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1_000_000:06d}+00:00"
        value = f"{rng.uniform(-50, 5000):.{rng.randint(0, 3)}f}"
        attributes = {"unit_of_measurement": unit, "device_class": device_class, "state_class": state_class,
                      "friendly_name": f"Fuzz {i} ä"}
        new_state = {"entity_id": entity, "state": value, "attributes": attributes, "last_updated": at,
                     "last_changed": at, "context": {"id": "01J", "parent_id": None}}
        form = i % 8
        if form == 0:
            out.append((EVENTS, json.dumps({"event_type": "state_changed", "event_data": {
                "entity_id": entity, "old_state": None, "new_state": new_state}}).encode()))
        elif form == 1:
            base = f"{STATESTREAM}/sensor/fuzz_{i % 500}"
            out += [(f"{base}/state", value.encode()), (f"{base}/last_updated", at.encode()),
                    (f"{base}/unit_of_measurement", json.dumps(unit).encode()),
                    (f"{base}/device_class", json.dumps(device_class).encode())]
        elif form == 2:
            out.append((Z2M, json.dumps({"temperature": round(rng.uniform(-10, 40), 2), "humidity": 44.7,
                                         "battery": 97, "linkquality": 120}).encode()))
        elif form == 3:
            out.append((EVENT_TOPIC, json.dumps({"id": 2, "type": "event", "event": {
                "event_type": "state_changed", "data": {"entity_id": entity, "new_state": new_state}}}).encode()))
        elif form == 4:
            out.append((history_topic(entity), json.dumps({"s": value, "a": attributes,
                                                           "lu": 1_796_032_800.123456 + i}).encode()))
        elif form == 5:
            out.append((STATE_TOPIC, json.dumps(new_state).encode()))
        elif form == 6:
            out.append((state_topic(entity), row_payload(value, json.dumps(attributes), 1_796_032_800.5 + i, None)))
        else:
            out.append((STATUS, rng.choice([b"online", b"offline"])))
    return out[:n]


def _swap(rng: random.Random, value: object) -> object:
    """`value` with one node (chosen at random along one path) replaced by a hostile value."""
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(list(value))
        return {**value, key: _swap(rng, value[key])}
    if isinstance(value, list) and value and rng.random() < 0.7:
        index = rng.randrange(len(value))
        return [*value[:index], _swap(rng, value[index]), *value[index + 1:]]
    return rng.choice(HOSTILE)


def _dumps(value: object) -> bytes:
    try:
        return json.dumps(value).encode()
    except (RecursionError, ValueError):
        return b"[" * 5_000


def mutate(rng: random.Random, topic: str, payload: bytes, other: tuple[str, bytes]) -> tuple[str, bytes, str]:
    """One mutation of a real message, and its name."""
    how = rng.choice(("flip", "truncate", "splice", "swap", "swap", "topic", "hostile"))
    if how == "flip" and payload:
        data = bytearray(payload)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return topic, bytes(data), how
    if how == "truncate" and payload:
        return topic, payload[:rng.randrange(len(payload))], how
    if how == "splice":
        return topic, payload[:rng.randint(0, len(payload))] + other[1][rng.randint(0, len(other[1])):], how
    if how == "topic":
        cut = rng.randint(0, len(topic))
        return topic[:cut] + rng.choice(["/", "+", "#", "\x00", "ä/", "/config", ""]) + other[0][cut:], payload, how
    if how == "hostile":
        return topic, _dumps(_swap(rng, rng.choice(HOSTILE))), how
    try:
        parsed = json.loads(payload)
    except ValueError:
        return topic, payload + rng.choice([b"\xff", b"\x00", b'"', b"}"]), "append"
    return topic, _dumps(_swap(rng, parsed)), "swap"


def payloads(rng: random.Random, n: int) -> tuple[list[tuple[str, bytes]], Counter[str]]:
    real = real_messages(rng, max(1, n // 5))
    out, kinds = list(real), Counter({"real": len(real)})
    while len(out) < n:
        topic, payload = rng.choice(real)
        topic, payload, how = mutate(rng, topic, payload, rng.choice(real))
        out.append((topic, payload))
        kinds[how] += 1
    rng.shuffle(out)
    out.insert(0, real[0])  # the discovery config first, so its state topic is learned
    return out[:n], kinds


def round_trips(line: str) -> bool:
    """The line reads back, and the point it reads as encodes to the same line."""
    try:
        read = read_line(line)
    except (Unreadable, ValueError):
        return False
    (field, value), = read.fields.items()
    point = Point(read.measurement, read.tags, read.time_ns, value=value if field == "value" else None,  # type: ignore[arg-type]
                  state=value if field == "state" else None)  # type: ignore[arg-type]
    return encode(point) == line


async def run(n: int, seed: int, say: Callable[[str], None], door: Door | None = None) -> int:
    """Without `door`: the pipeline alone, `discard` after each batch; with it: flushed into the stores."""
    rng = random.Random(seed)
    items, kinds = payloads(rng, n)
    pipeline = door.pipeline if door is not None else Pipeline(
        "fuzz", sources(), None, MetadataStore("fuzz", 10**7), None, "", None,  # type: ignore[arg-type]
        262_144, 10**9, 60.0)
    crashes, lines, bad_lines, bad_letters, stored_letters, unparsable = 0, 0, 0, 0, 0, 0
    reasons: Counter[str] = Counter()
    samples: dict[str, str] = {}
    started = time.perf_counter()
    for first in range(0, len(items), BATCH):
        batch = [Incoming(topic, payload, i, 1, 1, time.time_ns())
                 for i, (topic, payload) in enumerate(items[first:first + BATCH], first)]
        try:
            pipeline.process(batch, force=first + BATCH >= len(items))
        except Exception as exc:  # a crash of the worker's CPU path: what this bench exists to find
            crashes += 1
            say(f"CRASH {type(exc).__name__}: {exc!s:.200}")
        written = list(pipeline._lines)
        if door is None:
            _, letters = pipeline.discard()
        else:
            try:
                letters = await pipeline.flush()
            except Exception as exc:  # the flush failed on what this batch made: a crash of the worker
                crashes += 1
                say(f"CRASH in flush {type(exc).__name__}: {exc!s:.200}")
                pipeline.discard()
                continue
            stored_letters += len(letters)
        lines += len(written)
        bad_lines += sum(not round_trips(line) for line in written)
        for letter in letters:
            reasons[letter.reason] += 1
            samples.setdefault(letter.reason, letter.detail)
            if letter.reason == Reason.INFLUX_REJECTED and "unable to parse" in letter.detail:
                unparsable += 1  # a line of ours InfluxDB cannot read: an encoder defect
            if letter.reason not in set(Reason) or not letter.detail.strip():
                bad_letters += 1
    elapsed = time.perf_counter() - started
    crashes += reasons[Reason.INTERNAL_ERROR]
    say(f"payloads: {len(items):,} ({', '.join(f'{k} {v:,}' for k, v in kinds.most_common())})")
    where = "the door into InfluxDB and ops.dead_letters" if door else "Pipeline.process (every source, no I/O)"
    say(f"in {elapsed:.1f} s = {len(items) / elapsed:,.0f} payloads/s through {where}")
    say(f"crashes: {crashes} (exceptions out of process + internal_error dead letters)")
    say(f"points accepted: {lines:,}; not round-tripping: {bad_lines}")
    say(f"ignored (valid, nothing to store): {pipeline.counters['ignored']:,}")
    say(f"dead letters: {sum(reasons.values()):,}; without a known reason or detail: {bad_letters}")
    for reason, count in reasons.most_common():
        say(f"  {count:>8,}  {reason:<28} e.g. {samples[reason][:90]!r}")
    missing = 0
    if door is not None:
        say(f"points InfluxDB took: {door.counters['written']:,}; lines it could not parse: {unparsable}")
        cur = await door.conn.execute("SELECT count(*) FROM ops.dead_letters WHERE tenant_id = %s",
                                      (door.settings.tenant,))
        rows = int(str((await cur.fetchone() or (0,))[0]))
        missing = stored_letters - rows
        say(f"ops.dead_letters rows: {rows:,} of the {stored_letters:,} letters the flushes returned")
    return 1 if crashes or bad_lines or bad_letters or missing or unparsable else 0


async def stored_run(n: int, seed: int) -> int:
    """`run` through the door of a throwaway tenant of the test stack, removed afterwards."""
    import os
    import uuid

    import psycopg

    from devstack import influxdb, stack
    from devstack.profile import load_profile
    from ingest_worker.settings import load_settings

    profile = load_profile("test")
    env = stack.up(profile)
    tenant = f"fuzz{uuid.uuid4().hex[:8]}"
    database = f"hats_{tenant}"
    influxdb.ensure_tenant_database(profile, stack.secrets_for(profile), database, raw_days=30, rollup_days=730)
    os.environ.update({**env, "HATS_TENANT": tenant, "HATS_OUTBOX_DIR": str(ROOT / ".hats" / "bench" / "outbox")})
    try:
        async with Door(load_settings(), "fuzz", sources()) as door:
            status = await run(n, seed, print, door)
            await door.finish(print)
        return status
    finally:
        influxdb.query(profile, f'DROP DATABASE "{database}"', env["HATS_INFLUX_ADMIN_USERNAME"],
                       env["HATS_INFLUX_ADMIN_PASSWORD"])
        with psycopg.connect(env["HATS_PG_DSN"], autocommit=True) as conn:
            for table in ("core.entities", "core.devices", "ops.ingest_hours", "ops.dead_letters"):
                conn.execute(f"DELETE FROM {table} WHERE tenant_id = %s", (tenant,))
            conn.execute("DELETE FROM core.tenants WHERE tenant_id = %s", (tenant,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payloads", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--store", action="store_true", help="through the door into the test stack's stores")
    args = parser.parse_args()
    if args.store:
        sys.exit(asyncio.run(stored_run(args.payloads, args.seed)))
    sys.exit(asyncio.run(run(args.payloads, args.seed, print)))


if __name__ == "__main__":
    main()
