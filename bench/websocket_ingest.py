"""WebSocket source vs the eventstream path, from one real Home Assistant; and the time to fill a gap.

1. Throughput: N state changes pushed into Home Assistant through its REST API as fast as it takes them
   (8 threads), while one worker reads them through the WebSocket source (tenant A) and, in a second run
   of the same pushes, one reads them through mqtt_eventstream via Mosquitto (tenant B). Per path: state
   changes/s from the first push to the last point queryable in InfluxDB, and the lag after the last
   push. The ratio websocket / eventstream is printed. HA's own REST rate is the ceiling of both.
2. Gap fill: a WebSocket worker knows E entities and stops; for G minutes every entity changes every
   I seconds (HA's recorder keeps them); the worker starts again. Measured: start → "gap since …
   filled" in its log, and start → every state of the gap queryable in InfluxDB.

Uses the `test` stack and a Home Assistant test peer (devstack.home_assistant); both are left as found.
Usage: .venv/bin/python bench/websocket_ingest.py [--version 2025.4.4] [--changes 20000]
       [--gap-entities 500] [--gap-minutes 10] [--gap-interval-s 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack import influxdb, stack  # noqa: E402
from devstack.home_assistant.peer import HomeAssistantPeer  # noqa: E402
from devstack.home_assistant.provision import Broker  # noqa: E402
from devstack.profile import LOOPBACK, load_profile  # noqa: E402
from ingest_worker.tls import client_context  # noqa: E402

THREADS = 8
STALL_S = 20.0  # no new point for this long: the path has delivered all it will
ENTITIES = 100
ATTRIBUTES = {"unit_of_measurement": "W", "device_class": "power", "state_class": "measurement"}
DEADLINE_S = 900.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Bench:
    def __init__(self, version: str) -> None:
        self.profile = load_profile("test")
        self.env = stack.up(self.profile)
        self.secrets = stack.secrets_for(self.profile)
        self.run_id = uuid.uuid4().hex[:6]
        self.logs = Path(tempfile.mkdtemp(prefix="hats-bench-ws-"))
        port = int(self.env["HATS_MQTT_PORT"])
        self.peer = HomeAssistantPeer(
            version=version, state_root=self.profile.path("homeassistant"),
            broker=Broker(LOOPBACK, port, self.env["HATS_MQTT_HOMEASSISTANT_USERNAME"],
                          self.env["HATS_MQTT_HOMEASSISTANT_PASSWORD"], Path(self.env["HATS_MQTT_CA_FILE"])),
            listener=Broker(LOOPBACK, port, self.env["HATS_MQTT_USERNAME"], self.env["HATS_MQTT_PASSWORD"],
                            Path(self.env["HATS_MQTT_CA_FILE"])),
            progress=lambda message: print(f"  [home assistant] {message}", file=sys.stderr))
        self.workers: list[subprocess.Popen[bytes]] = []

    # -- helpers ------------------------------------------------------------------------------------
    def tenant(self, name: str) -> str:
        tenant = f"b{self.run_id}{name}"
        influxdb.ensure_tenant_database(self.profile, self.secrets, f"hats_{tenant}", 30, 730)
        return tenant

    def points(self, tenant: str, prefix: str) -> int:
        response = httpx.post(f"{self.env['HATS_INFLUX_URL']}/query",
                              data={"q": f"SELECT count(value) FROM power WHERE entity_id =~ /^{prefix}/",
                                    "db": f"hats_{tenant}"},
                              auth=(self.env["HATS_INFLUX_ADMIN_USERNAME"], self.env["HATS_INFLUX_ADMIN_PASSWORD"]),
                              timeout=60, verify=client_context(self.env["HATS_INFLUX_CA_FILE"]))
        series = response.json()["results"][0].get("series", [])
        return sum(int(s["values"][0][1]) for s in series)

    def start_worker(self, tenant: str, sources: str, log_name: str) -> tuple[subprocess.Popen[bytes], Path]:
        peer = self.peer
        env = {**os.environ, **self.env, "HATS_TENANT": tenant, "HATS_SOURCES": sources,
               "HATS_HA_URL": peer.api.url, "HATS_HA_TOKEN": peer.api.token, "HATS_HA_RECORDER_COMMIT_S": "0",
               "HATS_TOPIC_PREFIX": peer.topic_prefix,
               "HATS_EVENTSTREAM_TOPIC": peer.eventstream_topic.removeprefix(peer.topic_prefix),
               "HATS_MQTT_CLIENT_ID": f"bench-{tenant}", "HATS_HTTP_PORT": str(free_port()),
               "HATS_OUTBOX_DIR": str(self.logs / "outbox"), "HATS_LOG_FORMAT": "text"}
        log = self.logs / f"{log_name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "ingest_worker"], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, cwd=ROOT)
        self.workers.append(proc)
        ready = "subscribed to Home Assistant" if sources == "websocket" else "subscriptions confirmed by the broker"
        self.wait(lambda: ready in log.read_text(errors="replace") or proc.poll() is not None, f"{log_name} ready")
        if proc.poll() is not None:
            raise RuntimeError(f"worker {log_name} exited:\n{log.read_text(errors='replace')[-3000:]}")
        return proc, log

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)

    @staticmethod
    def wait(condition: object, what: str, timeout: float = DEADLINE_S, interval: float = 0.05) -> float:
        started = time.monotonic()
        while not condition():  # type: ignore[operator]
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(interval)
        return time.monotonic()

    def push(self, changes: list[tuple[str, str]]) -> float:
        """POST every (entity, state) to HA's REST API from THREADS threads; returns the seconds it took."""
        headers = {"Authorization": f"Bearer {self.peer.api.token}"}
        clients = [httpx.Client(base_url=self.peer.api.url, headers=headers, timeout=60) for _ in range(THREADS)]

        def post(lane: int) -> None:
            for entity, state in changes[lane::THREADS]:
                response = clients[lane].post(f"/api/states/{entity}", json={"state": state, "attributes": ATTRIBUTES})
                response.raise_for_status()

        started = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(post, range(THREADS)))
        for client in clients:
            client.close()
        return time.monotonic() - started

    # -- 1. throughput ------------------------------------------------------------------------------
    def delivered(self, tenant: str, prefix: str, total: int) -> tuple[int, float]:
        """Points once all `total` are in, or once none came for STALL_S; and when the last one came."""
        count, last_at = -1, time.monotonic()
        while True:
            found, now = self.points(tenant, prefix), time.monotonic()
            if found != count:
                count, last_at = found, now
            if count >= total or now - last_at > STALL_S:
                return count, last_at
            time.sleep(0.25)

    def throughput(self, sources: str, changes_total: int) -> tuple[float, float, float, int, int]:
        """For one path: state changes/s end to end, HA's REST rate, lag after the last push (s), points
        delivered, reconnects to HA."""
        tenant = self.tenant(sources[:2])
        prefix = f"sensor.bench_{self.run_id}_{sources[:2]}_"
        proc, log = self.start_worker(tenant, sources, sources)
        changes = [(f"{prefix}{i % ENTITIES:03d}", f"{1000 + i // ENTITIES}") for i in range(changes_total)]
        started = time.monotonic()
        push_s = self.push(changes)
        pushed = started + push_s
        count, done = self.delivered(tenant, prefix, changes_total)
        self.stop(proc)
        reconnects = log.read_text(errors="replace").count("not connected to Home Assistant")
        return count / (done - started), changes_total / push_s, done - pushed, count, reconnects

    # -- 2. gap fill --------------------------------------------------------------------------------
    def gap_fill(self, entities: int, minutes: float, interval_s: float) -> None:
        tenant = self.tenant("gap")
        prefix = f"sensor.bench_{self.run_id}_gap_"
        names = [f"{prefix}{i:03d}" for i in range(entities)]
        proc, log = self.start_worker(tenant, "websocket", "gap-before")
        self.push([(name, "0") for name in names])
        self.wait(lambda: self.points(tenant, prefix) >= entities, "the gap entities known", interval=0.25)
        self.stop(proc)  # its resume point is stored with its last flush
        rounds, started = 0, time.monotonic()
        while time.monotonic() - started < minutes * 60:
            round_started = time.monotonic()
            rounds += 1
            self.push([(name, str(rounds)) for name in names])
            time.sleep(max(0.0, interval_s - (time.monotonic() - round_started)))
        expected = entities * (rounds + 1)
        print(f"  gap: {rounds} rounds x {entities} entities over {time.monotonic() - started:.0f} s "
              f"({entities * rounds} states only the recorder has)", file=sys.stderr)
        before = time.monotonic()
        proc, log = self.start_worker(tenant, "websocket", "gap-after")
        filled = self.wait(lambda: "gap since" in log.read_text(errors="replace"), "the gap fill", interval=0.05)
        done = self.wait(lambda: self.points(tenant, prefix) >= expected, f"{expected} points", interval=0.25)
        line = next(x for x in log.read_text(errors="replace").splitlines() if "gap since" in x)
        self.stop(proc)
        print(f"gap fill, {entities} entities, {minutes:g} min at {interval_s:g} s: worker start -> fill logged "
              f"{filled - before:.1f} s, -> all {expected - entities} gap states in InfluxDB {done - before:.1f} s "
              f"({(expected - entities) / (done - before):.0f} states/s)\n  {line.split(' ', 3)[-1]}")

    def close(self, keep_logs: bool) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
        self.peer.close()
        if keep_logs:
            print(f"  worker logs kept in {self.logs}", file=sys.stderr)
        else:
            shutil.rmtree(self.logs, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--version", default="2025.4.4")
    parser.add_argument("--changes", type=int, default=20_000)
    parser.add_argument("--gap-entities", type=int, default=500)
    parser.add_argument("--gap-minutes", type=float, default=10.0)
    parser.add_argument("--gap-interval-s", type=float, default=10.0)
    parser.add_argument("--paths", default="websocket,eventstream", help="order of the throughput runs")
    args = parser.parse_args()
    bench = Bench(args.version)
    failed = True
    try:
        bench.peer.start()
        paths = args.paths.split(",")
        assert sorted(paths) == ["eventstream", "websocket"], "--paths takes websocket and eventstream, in any order"
        results = {path: bench.throughput(path, args.changes) for path in paths}
        print(f"Home Assistant {args.version}, {args.changes} state changes over {ENTITIES} entities, "
              f"REST pushes from {THREADS} threads")
        for path, (rate, rest, lag, count, reconnects) in results.items():
            again = f", {reconnects} reconnect(s)" if reconnects else ""
            print(f"  {path:11} {rate:7.0f} changes/s end to end (HA took {rest:.0f}/s), lag after the last push "
                  f"{lag:.2f} s, {count}/{args.changes} delivered{again}")
        print(f"  ratio websocket / eventstream: {results['websocket'][0] / results['eventstream'][0]:.2f}")
        if args.gap_minutes > 0:
            bench.gap_fill(args.gap_entities, args.gap_minutes, args.gap_interval_s)
        failed = False
    finally:
        bench.close(keep_logs=failed)


if __name__ == "__main__":
    main()
