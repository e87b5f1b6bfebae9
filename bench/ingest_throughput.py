"""Ingest throughput: broker ceiling vs a naive per-message writer vs ingest_worker, in one run.

Method: right before each consumer runs, N messages are preloaded into its persistent MQTT session
while it is offline (the broker queues them: nothing is lost, see the broker test); the consumer then
drains them and the wall time from its subscription to the last point being queryable is measured.
Preloading takes the publisher's speed out of the comparison; preloading each copy just in time keeps
the broker from carrying the other consumers' queues while one is measured. Then a live run at half
our measured rate gives the publish→queryable latency. Usage: .venv/bin/python bench/ingest_throughput.py [--messages N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack import influxdb, stack  # noqa: E402
from devstack.profile import load_profile  # noqa: E402
from ha_simulator.publish import Publisher, Target  # noqa: E402
from ingest_worker.mqtt_link import LinkSettings, MqttLink  # noqa: E402
from ingest_worker.tls import client_context, mqtt_context  # noqa: E402

ENTITIES = 1_000


def payload(i: int, at: datetime) -> bytes:
    entity = f"sensor.bench_{i % ENTITIES:04d}"
    stamp = at.isoformat()
    new_state = {"entity_id": entity, "state": f"{20 + (i % 100) / 10:.1f}",
                 "attributes": {"unit_of_measurement": "°C", "device_class": "temperature",
                                "state_class": "measurement", "friendly_name": f"Bench {i % ENTITIES}"},
                 "last_changed": stamp, "last_updated": stamp, "context": {"id": str(i)}}
    return json.dumps({"event_type": "state_changed",
                       "event_data": {"entity_id": entity, "old_state": None, "new_state": new_state}}).encode()


class Bench:
    def __init__(self, messages: int) -> None:
        self.messages = messages
        self.profile = load_profile("test")
        self.env = stack.up(self.profile)
        self.secrets = stack.secrets_for(self.profile)
        self.port = int(self.env["HATS_MQTT_PORT"])
        self.run_id = uuid.uuid4().hex[:8]

    # -- helpers ------------------------------------------------------------------------------------
    def tenant(self, name: str) -> str:
        tenant = f"b{self.run_id}{name}"
        influxdb.ensure_tenant_database(self.profile, self.secrets, f"hats_{tenant}", 30, 730)
        return tenant

    def count_points(self, tenant: str) -> int:
        response = httpx.post(f"{self.env['HATS_INFLUX_URL']}/query",
                              data={"q": "SELECT count(value) FROM raw./.*/", "db": f"hats_{tenant}"},
                              auth=(self.env["HATS_INFLUX_ADMIN_USERNAME"], self.env["HATS_INFLUX_ADMIN_PASSWORD"]),
                              timeout=60, verify=client_context(self.env["HATS_INFLUX_CA_FILE"]))
        series = response.json()["results"][0].get("series", [])
        return sum(int(s["values"][0][1]) for s in series)

    def subscribe_offline(self, client_id: str, topic: str) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        client.username_pw_set(self.env["HATS_MQTT_USERNAME"], self.env["HATS_MQTT_PASSWORD"])
        if (tls := mqtt_context(self.env)) is not None:
            client.tls_set_context(tls)
        done = threading.Event()
        client.on_subscribe = lambda *a: done.set()
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        client.subscribe(topic, qos=1)
        if not done.wait(10):
            raise RuntimeError("no SUBACK")
        client.disconnect()
        client.loop_stop()

    def preload(self, topics: list[str], start: datetime, count: int | None = None) -> None:
        """Publish the same N (or `count`) messages to each topic (each consumer gets its own copy)."""
        total = self.messages if count is None else count
        started = time.monotonic()
        # The bench's own account (bench/#) is bound to client id = its name: one connection for every topic.
        publisher = Publisher(Target("127.0.0.1", self.port, self.env["HATS_MQTT_BENCH_USERNAME"],
                                     self.env["HATS_MQTT_BENCH_PASSWORD"], topics[0], tls=mqtt_context(self.env)))
        for i in range(total):
            body = payload(i, start + timedelta(milliseconds=i))
            for topic in topics:
                publisher.publish(body, topic=topic)
            if i and i % 50_000 == 0:
                print(f"  preloading: {i}/{total}", file=sys.stderr)
        publisher.close()
        print(f"  preloaded {total} x {len(topics)} in {time.monotonic() - started:.1f} s", file=sys.stderr)

    # -- consumers ----------------------------------------------------------------------------------
    def bare_counter(self, client_id: str, topic: str) -> float:
        """The broker's ceiling: our network thread, acking at once, doing nothing else."""
        got = [0]
        done = threading.Event()
        link: MqttLink

        def on_batch() -> None:
            items = link.take()
            got[0] += len(items)
            link.ack(items)
            if got[0] >= self.messages:
                done.set()

        link = MqttLink(LinkSettings("127.0.0.1", self.port, self.env["HATS_MQTT_USERNAME"],
                                     self.env["HATS_MQTT_PASSWORD"], client_id, [(topic, False)],
                                     tls=mqtt_context(self.env)), on_batch)
        started = time.monotonic()
        link.start()
        if not done.wait(600):
            raise RuntimeError(f"bare counter got {got[0]} of {self.messages}")
        elapsed = time.monotonic() - started
        link.stop()
        return elapsed

    def naive_writer(self, client_id: str, topic: str, tenant: str, limit_s: float,
                     available: int) -> tuple[float, int]:
        """One HTTP write per message, acked by paho as it arrives: what a first draft would do."""
        http = httpx.Client(base_url=self.env["HATS_INFLUX_WRITE_URL"],
                            auth=(self.env["HATS_INFLUX_USERNAME"], self.env["HATS_INFLUX_PASSWORD"]),
                            verify=client_context(self.env["HATS_INFLUX_CA_FILE"]))
        from ingest_worker.lineprotocol import encode
        from ingest_worker.normalise import normalise
        from ingest_worker.sources.eventstream import parse

        written = [0]
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        client.username_pw_set(self.env["HATS_MQTT_USERNAME"], self.env["HATS_MQTT_PASSWORD"])
        if (tls := mqtt_context(self.env)) is not None:
            client.tls_set_context(tls)

        def on_message(c: mqtt.Client, u: object, message: mqtt.MQTTMessage) -> None:
            state = parse(message.payload)
            assert state is not None
            line = encode(normalise(state, time.time_ns()))
            http.post("/write", params={"db": f"hats_{tenant}", "rp": "raw", "precision": "ns"}, content=line)
            written[0] += 1

        client.on_message = on_message
        started = time.monotonic()
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        while time.monotonic() - started < limit_s and written[0] < available:
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        client.disconnect()
        client.loop_stop()
        return elapsed, written[0]

    def worker_env(self, tenant: str, client_id: str, topic: str) -> dict[str, str]:
        """The environment of a bench worker for one tenant and topic."""
        return {**os.environ, **self.env, "HATS_TENANT": tenant, "HATS_MQTT_CLIENT_ID": client_id,
                "HATS_EVENTSTREAM_TOPIC": topic, "HATS_SOURCES": "eventstream", "HATS_HTTP_PORT": "0",
                "HATS_OUTBOX_DIR": str(ROOT / ".hats" / "bench-outbox"), "HATS_LOG_FORMAT": "text"}

    def start_worker(self, tenant: str, client_id: str, topic: str) -> tuple[subprocess.Popen[bytes], Path]:
        """`python -m ingest_worker` for one tenant and topic, returned once the broker confirmed it."""
        env = self.worker_env(tenant, client_id, topic)
        log = ROOT / ".hats" / f"bench-worker-{tenant}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "ingest_worker"], env=env, cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT)
        wait(lambda: "subscriptions confirmed" in log.read_text(), "the worker to subscribe")
        return proc, log

    def worker(self, tenant: str, client_id: str, topic: str) -> tuple[float, int]:
        proc, log = self.start_worker(tenant, client_id, topic)
        started = time.monotonic()  # timed from the subscription: interpreter start-up is not throughput
        while self.count_points(tenant) < self.messages:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        rss_kb = peak_rss_kb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        return elapsed, rss_kb

    def latency(self, tenant: str, client_id: str, topic: str, rate: float, seconds: float) -> list[float]:
        """Publish at `rate` for `seconds`; for every 100th message, time until InfluxDB returns it."""
        proc, _ = self.start_worker(tenant, client_id, topic)
        publisher = Publisher(Target("127.0.0.1", self.port, self.env["HATS_MQTT_BENCH_USERNAME"],
                                     self.env["HATS_MQTT_BENCH_PASSWORD"], topic, tls=mqtt_context(self.env)))
        probes: dict[str, float] = {}
        seen: dict[str, float] = {}
        started = time.monotonic()
        sent = 0
        base = datetime.now(UTC)
        publishing = threading.Event()
        publishing.set()
        poller = threading.Thread(target=self.poll_probes, args=(tenant, probes, seen, base, publishing))
        poller.start()
        while time.monotonic() - started < seconds:
            due = int((time.monotonic() - started) * rate)
            while sent < due:
                body = payload(sent, base + timedelta(microseconds=sent))
                if sent % 100 == 0:
                    body = body.replace(b"sensor.bench_", b"sensor.probe_")
                    probes[f"sensor.probe_{sent % ENTITIES:04d}|{sent}"] = time.monotonic()
                publisher.publish(body)
                sent += 1
            time.sleep(0.001)
        publisher.close()
        publishing.clear()
        poller.join()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        return sorted(seen.values())

    def poll_probes(self, tenant: str, probes: dict[str, float], seen: dict[str, float], base: datetime,
                    publishing: threading.Event) -> None:
        """Runs beside the publisher: the moment a probe point is first queryable is its latency's end."""
        deadline = float("inf")
        auth = (self.env["HATS_INFLUX_ADMIN_USERNAME"], self.env["HATS_INFLUX_ADMIN_PASSWORD"])
        while time.monotonic() < deadline and (publishing.is_set() or len(seen) < len(probes)):
            if not publishing.is_set() and deadline == float("inf"):
                deadline = time.monotonic() + 60
            response = httpx.post(f"{self.env['HATS_INFLUX_URL']}/query", auth=auth, timeout=30, data={
                "q": "SELECT value, entity_id FROM raw.temperature WHERE entity_id =~ /^sensor.probe_/ "
                     "AND time > now() - 5m",
                "db": f"hats_{tenant}", "epoch": "ns"}, verify=client_context(self.env["HATS_INFLUX_CA_FILE"]))
            now = time.monotonic()
            for series in response.json()["results"][0].get("series", []):
                for stamp, _value, entity in series["values"]:
                    sequence = round((stamp - int(base.timestamp() * 1e9)) / 1000)
                    key = f"{entity}|{sequence}"
                    if key in probes and key not in seen:
                        seen[key] = now - probes[key]
            time.sleep(0.02)


def wait(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--naive-seconds", type=float, default=20.0, help="how long the naive writer runs")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--worker-only", action="store_true", help="only (c): for tuning runs")
    args = parser.parse_args()
    bench = Bench(args.messages)
    run = bench.run_id
    if args.worker_only:
        topic, client_id = f"bench/{run}/worker", f"bench-{run}-worker"
        bench.subscribe_offline(client_id, topic)
        bench.preload([topic], datetime.now(UTC) - timedelta(hours=1))
        tenant = bench.tenant("worker")
        seconds, rss_kb = bench.worker(tenant, client_id, topic)
        assert bench.count_points(tenant) == args.messages, "published != written"
        print(f"ingest_worker: {args.messages / seconds:,.0f} msg/s, peak RSS {rss_kb / 1024:.0f} MB")
        return
    topics = {name: f"bench/{run}/{name}" for name in ("bare", "naive", "worker")}
    ids = {name: f"bench-{run}-{name}" for name in topics}
    start = datetime.now(UTC) - timedelta(hours=1)
    for name in topics:
        bench.subscribe_offline(ids[name], topics[name])

    bench.preload([topics["bare"]], start)
    bare_s = bench.bare_counter(ids["bare"], topics["bare"])
    bare_rate = args.messages / bare_s
    print(f"(a) broker ceiling, bare counting subscriber: {bare_rate:,.0f} msg/s", file=sys.stderr)
    # The naive writer manages ~1k msg/s: give it what it can drain in its time, not N.
    naive_available = min(args.messages, int(args.naive_seconds * 3_000))
    bench.preload([topics["naive"]], start, count=naive_available)
    naive_s, naive_n = bench.naive_writer(ids["naive"], topics["naive"], bench.tenant("naive"), args.naive_seconds,
                                          naive_available)
    naive_rate = naive_n / naive_s
    print(f"(b) naive per-message writer: {naive_rate:,.0f} msg/s", file=sys.stderr)
    worker_tenant = bench.tenant("worker")
    bench.preload([topics["worker"]], start)
    worker_s, rss_kb = bench.worker(worker_tenant, ids["worker"], topics["worker"])
    assert bench.count_points(worker_tenant) == args.messages, "published != written"
    worker_rate = args.messages / worker_s
    print(f"(c) ingest_worker, QoS 1, deferred acks: {worker_rate:,.0f} msg/s", file=sys.stderr)

    rate = worker_rate / 2
    latencies = bench.latency(bench.tenant("latency"), f"bench-{run}-latency", f"bench/{run}/latency", rate,
                              args.latency_seconds)
    p50 = statistics.median(latencies)
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    print(json.dumps({
        "messages": args.messages,
        "broker_ceiling_msg_s": round(bare_rate),
        "naive_writer_msg_s": round(naive_rate),
        "worker_msg_s": round(worker_rate),
        "worker_vs_naive": round(worker_rate / naive_rate, 1),
        "worker_vs_ceiling": round(worker_rate / bare_rate, 2),
        "published_equals_written": True,
        "latency_rate_msg_s": round(rate),
        "latency_probes": len(latencies),
        "latency_p50_s": round(p50, 3),
        "latency_p99_s": round(p99, 3),
        "worker_peak_rss_mb": round(rss_kb / 1024, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
