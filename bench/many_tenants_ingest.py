"""The cost of tenancy in the worker: the same offered load as 1,000 homes × 20 entities and as one home
of 20,000 entities, each served by one registry-mode worker (`HATS_TENANT_MODE=registry`).

Method: the homes are rows of `core.tenants` (prefix `hats/<id>/`) whose ids hash into a shard of their
own, so each worker serves exactly one configuration. Once the worker has confirmed every home's
subscription, a publisher sends `--rate` msg/s (eventstream `state_changed`, QoS 1, entity after entity
round-robin: the 10 s cadence of 20,000 entities is 2,000 msg/s) for `--seconds`; `--rate 0` sends as fast
as it can. Measured from the first publish until InfluxDB holds every point (the worker's per-home
counters, then checked against InfluxDB's own counts): delivered msg/s, the worker's CPU seconds per 1,000
messages (user + system, /proc), its peak RSS, and the drain after the last publish. The ratio many/one
of delivered msg/s is the figure the issue sets (≥ 0.9×); the CPU ratio is the headroom it costs.
Measured here (2 cores shared with the stack, 2,000 msg/s for 30 s, HATS_BATCH_MAX_AGE_S 2, every point
checked in InfluxDB): one home 1,904 msg/s delivered, 0.105 CPU s per 1,000 messages, 105 MB; 1,000 homes
1,818 msg/s (0.95×), 0.41 CPU s per 1,000 (3.9×: one InfluxDB write and one PostgreSQL transaction per
home and batch, ~500 a second), 148 MB, drained 3 s after the last publish.
Usage: .venv/bin/python bench/many_tenants_ingest.py [--homes 1000] [--entities 20] [--rate 2000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest_throughput import peak_rss_kb, wait  # noqa: E402
from devstack import influxdb, stack  # noqa: E402
from devstack.procs import free_port  # noqa: E402
from devstack.profile import load_profile  # noqa: E402
from ingest_worker.contract import shard_of  # noqa: E402
from ingest_worker.tls import client_context, mqtt_context  # noqa: E402

SHARDS = 16
EVENTS = "homeassistant/events"
PUBLISH_INFLIGHT = 2_000
WRITTEN = re.compile(r'^hats_tenant_points_written_total\{tenant="[^"]+"\} ([0-9.e+]+)$', re.MULTILINE)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def payload(entity: str, value: float, at: datetime) -> bytes:
    stamp = at.isoformat()
    new_state = {"entity_id": entity, "state": f"{value:.2f}",
                 "attributes": {"unit_of_measurement": "W", "device_class": "power", "state_class": "measurement"},
                 "last_changed": stamp, "last_updated": stamp, "context": {"id": "bench"}}
    return json.dumps({"event_type": "state_changed",
                       "event_data": {"entity_id": entity, "old_state": None, "new_state": new_state}}).encode()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


@dataclass
class Result:
    homes: int
    entities_per_home: int
    messages: int
    delivered_msg_s: float
    cpu_s_per_1000: float
    drain_s: float
    peak_rss_mb: float


class Bench:
    def __init__(self, profile: str) -> None:
        self.profile = load_profile(profile)
        self.env = stack.up(self.profile)
        self.secrets = stack.secrets_for(self.profile)
        self.run_id = uuid.uuid4().hex[:6]
        self.made: list[str] = []
        self.stored: dict[tuple[str, ...], int] = {}  # points published to these homes by earlier runs

    def homes(self, count: int, shard: int, tag: str, entities: int) -> list[str]:
        """`count` homes whose ids hash into `shard`: a database and an active row with a prefix and a series
        budget for `entities` each."""
        names: list[str] = []
        i = 0
        while len(names) < count:
            name = f"b{self.run_id}{tag}{i}"
            i += 1
            if shard_of(name, SHARDS) == shard:
                names.append(name)
        started = time.monotonic()
        for n, name in enumerate(names):
            influxdb.ensure_tenant_database(self.profile, self.secrets, f"hats_{name}", 30, 730)
            self.made.append(name)
            if n and n % 200 == 0:
                print(f"  {n}/{count} databases", file=sys.stderr)
        with psycopg.connect(self.env["HATS_PG_DSN"], autocommit=True) as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO core.tenants (tenant_id, name, topic_prefix, series_budget) "
                            "VALUES (%s, 'bench', %s, %s)", [(name, f"hats/{name}/", entities) for name in names])
        print(f"  {count} home(s) made in {time.monotonic() - started:.1f} s", file=sys.stderr)
        return names

    def cleanup(self) -> None:
        with psycopg.connect(self.env["HATS_PG_DSN"], autocommit=True) as conn:
            conn.execute("DELETE FROM ops.dead_letters WHERE tenant_id = ANY(%s)", (self.made,))
            conn.execute("DELETE FROM core.tenants WHERE tenant_id = ANY(%s)", (self.made,))
        for name in self.made:
            influxdb.query(self.profile, f'DROP DATABASE "hats_{name}"', self.env["HATS_INFLUX_ADMIN_USERNAME"],
                           self.env["HATS_INFLUX_ADMIN_PASSWORD"])

    def count_points(self, names: list[str]) -> int:
        auth = (self.env["HATS_INFLUX_ADMIN_USERNAME"], self.env["HATS_INFLUX_ADMIN_PASSWORD"])
        total = 0
        with httpx.Client(base_url=self.env["HATS_INFLUX_URL"], auth=auth, timeout=60,
        verify=client_context(self.env["HATS_INFLUX_CA_FILE"])) as http:
            for name in names:
                body = http.post("/query", data={"q": "SELECT count(value) FROM raw./.*/", "db": f"hats_{name}"})
                series = body.json()["results"][0].get("series", [])
                total += sum(int(s["values"][0][1]) for s in series)
        return total

    def run(self, names: list[str], shard: int, entities_per_home: int, rate: float, seconds: float,
            batch_age: float, extra_env: dict[str, str] | None = None, label: str = "",
            interleave: bool = False) -> Result:
        """One worker serving `names`; `extra_env` added to its environment, `label` telling its log from
        another run's over the same homes (their points add up: InfluxDB is checked for all). Such runs share
        the client id: another session in the share group would take half the messages while offline.
        `interleave`: entity e of every home, then e + 1 (each home sends steadily, a message every
        homes/rate s) instead of each home's entities in a burst."""
        port = free_port()
        log = ROOT / ".hats" / f"bench-many-{self.run_id}-{len(names)}{label}.log"
        env = {**os.environ, **self.env, "HATS_TENANT_MODE": "registry", "HATS_SHARDS": str(SHARDS),
               "HATS_SHARD": str(shard), "HATS_SOURCES": "eventstream", "HATS_HTTP_PORT": str(port),
               "HATS_MQTT_CLIENT_ID": f"bench-{self.run_id}-{len(names)}", "HATS_LOG_FORMAT": "text",
               "HATS_OUTBOX_DIR": str(ROOT / ".hats" / "bench-outbox"), "HATS_BATCH_MAX_AGE_S": str(batch_age),
               **(extra_env or {})}
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "ingest_worker"], env=env, cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT)
        try:
            wait(lambda: log.read_text().count(": serving (subscriptions confirmed)") >= len(names)
                 or proc.poll() is not None, f"the worker to serve {len(names)} home(s)", timeout=600)
            assert proc.poll() is None, log.read_text()[-3000:]
            url = f"http://127.0.0.1:{port}/metrics"
            entities = [(f"hats/{name}/{EVENTS}", f"sensor.power_{e}") for name in names
                        for e in range(entities_per_home)]
            if interleave:
                entities.sort(key=lambda topic_entity: int(topic_entity[1].rsplit("_", 1)[1]))  # stable: homes in order
            count = int(rate * seconds) if rate else len(entities) * 5
            cpu_before, started = cpu_seconds(proc.pid), time.monotonic()
            publish(self.env, entities, count, rate)
            published = time.monotonic()
            wait(lambda: written(url) >= count or proc.poll() is not None, "every point written", timeout=900)
            assert proc.poll() is None, log.read_text()[-3000:]
            done = time.monotonic()
            cpu = cpu_seconds(proc.pid) - cpu_before
            rss = peak_rss_kb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
        stored = self.count_points(names)
        expected = self.stored.get(tuple(names), 0) + count
        assert stored == expected, f"published {expected} in all, InfluxDB holds {stored}"
        self.stored[tuple(names)] = stored
        return Result(len(names), entities_per_home, count, count / (done - started), cpu / count * 1000,
                      done - published, rss / 1024)


def written(url: str) -> int:
    return int(sum(float(v) for v in WRITTEN.findall(httpx.get(url, timeout=30).text)))


def publish(env: dict[str, str], entities: list[tuple[str, str]], count: int, rate: float) -> None:
    """`count` state changes, entity after entity, at `rate` msg/s (0: as fast as the broker takes them)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)
    client.username_pw_set(env["HATS_MQTT_HOMEASSISTANT_USERNAME"], env["HATS_MQTT_HOMEASSISTANT_PASSWORD"])
    if (tls := mqtt_context(env)) is not None:
        client.tls_set_context(tls)
    client.max_inflight_messages_set(PUBLISH_INFLIGHT)
    client.max_queued_messages_set(0)
    acked = threading.Semaphore(0)
    client.on_publish = lambda *a: acked.release()
    client.connect("127.0.0.1", int(env["HATS_MQTT_PORT"]))
    client.loop_start()
    base = datetime.now(UTC) - timedelta(hours=1)
    started = time.monotonic()
    for i in range(count):
        topic, entity = entities[i % len(entities)]
        client.publish(topic, payload(entity, (i % 1000) / 10, base + timedelta(microseconds=i)), qos=1)
        if rate and i % 100 == 99:
            ahead = (i + 1) / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)  # pacing of the offered load
    for _ in range(count):
        acked.acquire(timeout=120)
    client.disconnect()
    client.loop_stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--homes", type=int, default=1_000)
    parser.add_argument("--entities", type=int, default=20, help="entities per home (the one home has all)")
    parser.add_argument("--rate", type=float, default=2_000, help="offered msg/s (0: as fast as possible)")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--batch-age", type=float, default=2.0,
                        help="HATS_BATCH_MAX_AGE_S of both workers: a home of 20 entities sends 2 msg/s, so at the "
                             "default 0.25 s each of 1,000 homes would flush nearly every message on its own")
    parser.add_argument("--profile", default="test")
    args = parser.parse_args()
    bench = Bench(args.profile)
    one_shard = int.from_bytes(os.urandom(1), "big") % SHARDS
    many_shard = (one_shard + 1) % SHARDS
    try:
        everything = args.homes * args.entities
        one = bench.run(bench.homes(1, one_shard, "o", everything), one_shard, everything, args.rate, args.seconds,
                        args.batch_age)
        print(f"1 home: {json.dumps(one.__dict__)}", file=sys.stderr)
        many = bench.run(bench.homes(args.homes, many_shard, "m", args.entities), many_shard, args.entities, args.rate,
                         args.seconds, args.batch_age)
        print(f"{args.homes} homes: {json.dumps(many.__dict__)}", file=sys.stderr)
    finally:
        bench.cleanup()
    print(json.dumps({
        "offered_msg_s": args.rate or "max", "messages": one.messages, "batch_max_age_s": args.batch_age,
        "one_home": {k: round(v, 3) for k, v in one.__dict__.items()},
        "many_homes": {k: round(v, 3) for k, v in many.__dict__.items()},
        "delivered_ratio_many_vs_one": round(many.delivered_msg_s / one.delivered_msg_s, 3),
        "cpu_ratio_many_vs_one": round(many.cpu_s_per_1000 / one.cpu_s_per_1000, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
