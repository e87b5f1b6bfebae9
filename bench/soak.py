"""Chaos soak: the simulator at ``--rate`` msg/s for ``--minutes`` through a real worker while, one after
another, InfluxDB is killed for 60 s, PostgreSQL is killed (immediate) for 30 s, the broker restarts, the
worker is SIGKILLed five times and the outbox fills to its bound (InfluxDB stopped until the worker says
"full", held there 30 s), with the hourly rollup running for each simulated hour as it closes.

Then it proves what the platform promises, and exits 1 on the first promise broken:
- published = written, exactly: every value the simulator published is a raw point (its own statistics);
- 0 crashes: no process exited that the soak did not kill (worker, InfluxDB, PostgreSQL, Mosquitto);
- every alert a fault should raise fired during that fault and none is firing once all has drained, as
  the stack's live Prometheus recorded it (its ``ALERTS`` series and ``/api/v1/alerts``);
- the soak's hours, rolled up once more after the faults (what the late-data sensor asks for), pass every
  rollup check.

Simulated time runs ``--speed`` times faster than the wall clock and ends at now, so a 30-minute soak
covers several closed hours. Loopback only, on the test profile's stack (set ``HATS_PORT_OFFSET`` to keep
it away from a test stack in use); bounded: the outbox by ``--outbox-mib``, the broker by its queue limits.
Usage: .venv/bin/python bench/soak.py [--minutes 30] [--rate 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HATS_PARTITIONS_START", (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%d"))

from devstack import alerts, influxdb, mosquitto, postgres, prometheus, stack  # noqa: E402
from devstack.procs import free_port  # noqa: E402
from devstack.profile import Profile, load_profile  # noqa: E402

HOUR = timedelta(hours=1)
LATE_MARGIN = timedelta(minutes=20)  # the simulator publishes late readings up to 15 simulated minutes late
DRAIN_STALL_S = 300.0  # the drain gives up once InfluxDB gained no point for this long
DRAIN_POLL_S = 5.0  # a count over the whole run's points costs InfluxDB CPU the drain needs
DRAIN_LIMIT_S = 1_800.0  # the soak stays bounded even when the drain crawls on (a broker at 100 msg/s)
RESOLVE_TIMEOUT_S = 300.0
ALERT_GRACE = timedelta(seconds=60)  # an alert's `for:` (scaled in the test profile) and a few evaluations


def grace(moment: str) -> str:
    return (datetime.fromisoformat(moment) + ALERT_GRACE).isoformat(timespec="seconds")


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)  # a benchmark reports on stdout


def wait(condition: Callable[[], bool], what: str, timeout: float) -> float:
    """Seconds until `condition` held (polling, not sleeping a guess); raises naming `what` on timeout."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - began


def drain(soak: Soak, published: int) -> float | None:
    """Seconds until InfluxDB holds every published value and the outbox is empty, or None once no point
    arrived for ``DRAIN_STALL_S`` (what is missing is then reported entity by entity). A worker still
    working through the broker's backlog is given the time it needs: a fixed deadline counted slow as lost."""
    began = last_gain = time.monotonic()
    best = -1
    while True:
        points = soak.points()
        if points >= published and (soak.metric("hats_outbox_batches") or 0) == 0:
            return time.monotonic() - began
        if points > best:
            best, last_gain = points, time.monotonic()
        elif time.monotonic() - last_gain > DRAIN_STALL_S:
            log(f"drain stalled: {points} of {published} values in InfluxDB, none more for {DRAIN_STALL_S:.0f} s")
            return None
        if time.monotonic() - began > DRAIN_LIMIT_S:
            log(f"drain unfinished: {points} of {published} values in InfluxDB after {DRAIN_LIMIT_S:.0f} s")
            return None
        time.sleep(DRAIN_POLL_S)  # a poll interval, not a guess of when the drain is done


@dataclass
class Soak:
    profile: Profile
    env: dict[str, str]
    secrets: dict[str, str]
    tenant: str
    prefix: str
    outbox_bytes: int
    run_dir: Path
    http_port: int = field(default_factory=free_port)
    events: list[dict[str, Any]] = field(default_factory=list)
    crashes: list[dict[str, Any]] = field(default_factory=list)
    rollups: list[dict[str, Any]] = field(default_factory=list)
    kills_expected: int = 0
    worker: subprocess.Popen[bytes] | None = None
    worker_log: Path | None = None
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- the worker ------------------------------------------------------------------------------------
    def worker_env(self) -> dict[str, str]:
        return {**os.environ, **self.env, "HATS_TENANT": self.tenant, "HATS_TOPIC_PREFIX": self.prefix,
                "HATS_MQTT_CLIENT_ID": f"hats-soak-{self.tenant}", "HATS_HTTP_PORT": str(self.http_port),
                "HATS_OUTBOX_DIR": str(self.run_dir / "outbox"), "HATS_OUTBOX_MAX_BYTES": str(self.outbox_bytes),
                "HATS_LOG_FORMAT": "text"}

    @property
    def worker_name(self) -> str:
        return f"soak-{self.tenant}"

    @property
    def worker_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start_worker(self) -> None:
        self.worker_log = self.run_dir / f"worker-{len(self.events)}.log"
        with self.worker_log.open("ab") as out:
            self.worker = subprocess.Popen([sys.executable, "-m", "ingest_worker"], env=self.worker_env(), cwd=ROOT,
                                           stdout=out, stderr=subprocess.STDOUT)
        log_file = self.worker_log
        wait(lambda: "subscriptions confirmed" in log_file.read_text(errors="replace") or self.worker_exited(),
             "the worker to subscribe", 120)

    def worker_exited(self) -> bool:
        return self.worker is not None and self.worker.poll() is not None

    def kill_worker(self, down_s: float = 0.0) -> None:
        """SIGKILL, then a restart after `down_s` (a supervisor's back-off)."""
        assert self.worker is not None
        with self.lock:
            self.kills_expected += 1
            self.worker.kill()
            self.worker.wait(30)
            self.stopping.wait(down_s)
            self.start_worker()

    def metric(self, name: str) -> float | None:
        try:
            text = httpx.get(f"{self.worker_url}/metrics", timeout=5).text
        except httpx.HTTPError:
            return None
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and line[len(name)] in " {")

    def readiness(self) -> str:
        try:
            return httpx.get(f"{self.worker_url}/readyz", timeout=5).text
        except httpx.HTTPError as error:
            return f"unreachable: {error}"

    # -- what the soak watches -------------------------------------------------------------------------
    def watch(self) -> None:
        """Every second: a process the soak did not kill that is gone is a crash (the worker is restarted
        so the soak can go on and count it); the peaks of lag and outbox are kept for the report."""
        services = {"InfluxDB": influxdb.process(self.profile), "Mosquitto": mosquitto.process(self.profile)}
        self.peaks = {"consumer_lag_s": 0.0, "outbox_bytes": 0.0}
        while not self.stopping.wait(1.0):
            with self.lock:
                if self.worker_exited():
                    assert self.worker is not None
                    assert self.worker_log is not None
                    tail = self.worker_log.read_text(errors="replace")[-3000:]
                    self.crashes.append({"what": "worker", "code": self.worker.returncode, "at": now(), "log": tail})
                    log(f"CRASH: the worker exited with {self.worker.returncode}; restarting it")
                    self.start_worker()
            for name, proc in services.items():
                if not self.expected_down(name) and proc.pid() is None:
                    self.crashes.append({"what": name, "at": now()})
                    log(f"CRASH: {name} is gone")
            if not self.expected_down("PostgreSQL") and not postgres.running(self.profile):
                self.crashes.append({"what": "PostgreSQL", "at": now()})
                log("CRASH: PostgreSQL is gone")
            for key, metric in (("consumer_lag_s", "hats_consumer_lag_seconds"), ("outbox_bytes", "hats_outbox_bytes")):
                value = self.metric(metric)
                if value is not None:
                    self.peaks[key] = max(self.peaks[key], value)

    def expected_down(self, name: str) -> bool:
        return any(e["service"] == name and e.get("end") is None for e in self.events)

    def record(self, fault: str, service: str, alerts: tuple[str, ...]) -> dict[str, Any]:
        event: dict[str, Any] = {"fault": fault, "service": service, "start": now(), "end": None,
                                 "alerts_expected": list(alerts)}
        self.events.append(event)
        log(f"fault: {fault}")
        return event

    # -- faults ----------------------------------------------------------------------------------------
    def kill_influxdb(self, seconds: float) -> None:
        event = self.record(f"InfluxDB killed for {seconds:.0f} s", "InfluxDB", ("HatsOutboxGrowing",))
        pid = influxdb.process(self.profile).pid()
        assert pid is not None, "InfluxDB is not running"
        os.kill(pid, signal.SIGKILL)
        self.stopping.wait(seconds)
        influxdb.start(self.profile, self.secrets)
        event["end"] = now()

    def kill_postgres(self, seconds: float) -> None:
        event = self.record(f"PostgreSQL killed (immediate) for {seconds:.0f} s", "PostgreSQL",
                            ("HatsOpsExporterDown",))
        postgres.stop(self.profile, mode="immediate")
        self.stopping.wait(seconds)
        postgres.start(self.profile, self.secrets)
        event["end"] = now()

    def restart_broker(self, down_s: float) -> None:
        """Down long enough for the connection-lost alert's `for:` (a restart's own second or two is not)."""
        event = self.record(f"broker restarted after {down_s:.0f} s down", "Mosquitto", ("HatsBrokerConnectionLost",))
        mosquitto.stop(self.profile)
        self.stopping.wait(down_s)
        mosquitto.start(self.profile, self.secrets)
        event["end"] = now()

    def kill_worker_five_times(self, gap_s: float, down_s: float) -> None:
        event = self.record(f"worker SIGKILLed 5 times, each down {down_s:.0f} s", "worker", ("HatsWorkerDown",))
        event["unconfirmed_at_kills"] = []  # receipt times the broker had not confirmed: what each kill resends
        for _ in range(5):
            before = self.points()
            wait(lambda b=before: self.points() > b, "progress before the kill", 120)  # type: ignore[misc]
            event["unconfirmed_at_kills"].append(self.metric("hats_receipt_times_kept"))
            self.kill_worker(down_s)
            self.stopping.wait(gap_s)
        event["end"] = now()

    def fill_outbox(self, hold_s: float) -> None:
        """InfluxDB stopped until the outbox reaches its bound (the worker says so in /readyz), held there."""
        event = self.record("outbox filled to its bound", "InfluxDB",
                            ("HatsWorkerNotReady", "HatsOutboxGrowing"))
        influxdb.stop(self.profile)
        try:
            waited = wait(lambda: "outbox full" in self.readiness(),
                          f"the outbox to reach its bound of {self.outbox_bytes} bytes", 900)
            event["filled_after_s"] = round(waited, 1)
            event["outbox_bytes_at_bound"] = self.metric("hats_outbox_bytes")
            self.stopping.wait(hold_s)
        finally:
            influxdb.start(self.profile, self.secrets)
            event["end"] = now()

    # -- the store ---------------------------------------------------------------------------------------
    def points(self) -> int:
        body = influxdb.query(self.profile, f'SELECT count(value) FROM "hats_{self.tenant}"."raw"./.*/',
                              influxdb.ADMIN_USER, self.secrets["influx_admin"])
        total = 0
        for result in body.get("results", []):  # type: ignore[attr-defined]
            for series in result.get("series", []):
                total += sum(int(v) for v in series["values"][0][1:] if v is not None)
        return total

    def points_by_entity(self) -> dict[str, int]:
        statement = f'SELECT count(value) FROM "hats_{self.tenant}"."raw"./.*/ GROUP BY entity_id'
        body = influxdb.query(self.profile, statement, influxdb.ADMIN_USER, self.secrets["influx_admin"])
        counts: dict[str, int] = {}
        for result in body.get("results", []):  # type: ignore[attr-defined]
            for series in result.get("series", []):
                entity = series["tags"]["entity_id"]
                counts[entity] = counts.get(entity, 0) + sum(int(v) for v in series["values"][0][1:] if v is not None)
        return counts

    def dead_letters(self) -> dict[str, int]:
        import psycopg
        with psycopg.connect(self.env["HATS_PG_DSN"]) as conn:
            rows = conn.execute("SELECT reason, count(*) FROM ops.dead_letters WHERE tenant_id = %s GROUP BY reason",
                                (self.tenant,)).fetchall()
        return {str(reason): int(count) for reason, count in rows}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- the publisher ------------------------------------------------------------------------------------------
class Resilient:
    """The simulator's sink across a broker restart: a publish refused because the connection is down is
    retried once paho has reconnected (a QoS 1 message paho already queued may then arrive twice: the same
    point, which InfluxDB stores once)."""

    def __init__(self, publisher: Any, stopping: threading.Event) -> None:
        self._publisher = publisher
        self._stopping = stopping
        self.retries = 0

    def publish(self, payload: bytes, topic: str | None = None, retain: bool = False) -> None:
        while True:
            try:
                self._publisher.publish(payload, topic, retain)
                return
            except (ConnectionError, TimeoutError):
                self.retries += 1
                wait(self._connected, "the broker to take the publisher back", 300)

    def _connected(self) -> bool:
        return bool(self._publisher._client.is_connected())  # paho's own reconnect state

    def close(self) -> None:
        self._publisher.close()


# -- rollups ------------------------------------------------------------------------------------------------
def rollup_child(partition: str, tenant: str) -> int:
    """In a child process: the hour's rollups and checks for the soak's home, on the stack's Dagster
    instance (run storage in PostgreSQL, as the schedule's runs), printing one JSON line."""
    import dagster as dg

    from hats_assets.defs.common.resources import InfluxDBResource, PostgresResource
    from hats_assets.defs.common.tenants import TenantSelection
    from hats_assets.defs.quality.rollup_checks import rollup_checks
    from hats_assets.defs.rollups.assets import rollups

    env = os.environ
    resources = {
        "influxdb": InfluxDBResource(url=env["HATS_INFLUX_URL"], username=env["HATS_INFLUX_DAGSTER_USERNAME"],
                                     password=env["HATS_INFLUX_DAGSTER_PASSWORD"], ca_file=env["HATS_INFLUX_CA_FILE"]),
        "postgres": PostgresResource(dsn=env["HATS_DAGSTER_DSN"]),
        "tenant_selection": TenantSelection(tenants=[tenant]),
    }
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([rollups, *rollup_checks], instance=instance, resources=resources,
                                partition_key=partition, raise_on_error=False)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    failure = ""
    if not result.success:
        failed = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        failure = str(failed[0].event_specific_data.error.message if failed else "the run failed")[:400]  # type: ignore[union-attr]
    print(json.dumps({"success": result.success, "checks": checks, "failure": failure}))
    return 0


def run_rollup(soak: Soak, hour: datetime, why: str) -> dict[str, Any]:
    partition = hour.strftime("%Y-%m-%d-%H:%M")
    began = time.monotonic()
    proc = subprocess.run([sys.executable, __file__, "--child-rollup", partition, "--tenant", soak.tenant],
                          env={**os.environ, **soak.env}, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    lines = proc.stdout.strip().splitlines()
    outcome: dict[str, Any] = json.loads(lines[-1]) if proc.returncode == 0 and lines else {
        "success": False, "checks": {}, "failure": proc.stderr[-400:]}
    outcome.update(hour=partition, why=why, at=now(), seconds=round(time.monotonic() - began, 1))
    soak.rollups.append(outcome)
    log(f"rollup {partition} ({why}): {'ok' if outcome['success'] else 'FAILED ' + outcome['failure'][:120]}")
    return outcome


def rollups_through(soak: Soak, sim_start: datetime, sim_clock: list[datetime], every_s: float) -> None:
    """The hourly schedule, compressed: each simulated hour rolled up once the simulator's clock has passed
    its end (with the late readings' margin), whatever the faults are doing at that moment."""
    done: set[datetime] = set()
    while not soak.stopping.wait(every_s):
        sim_now = sim_clock[-1]
        hour = sim_start.replace(minute=0, second=0, microsecond=0)
        while hour + HOUR + LATE_MARGIN <= sim_now:
            if hour not in done and hour >= sim_start:
                done.add(hour)
                run_rollup(soak, hour, "schedule")
            hour += HOUR


# -- alerts -------------------------------------------------------------------------------------------------
def firing(prom: str, start: datetime, end: datetime) -> dict[str, list[str]]:
    """Alert name → the moments (5 s steps) Prometheus recorded it firing between start and end."""
    response = httpx.get(f"{prom}/api/v1/query_range", timeout=30, params={
        "query": 'ALERTS{alertstate="firing"}', "start": start.timestamp(), "end": end.timestamp(), "step": "5s"})
    response.raise_for_status()
    out: dict[str, list[str]] = {}
    for series in response.json()["data"]["result"]:
        name = series["metric"]["alertname"]
        out.setdefault(name, []).extend(datetime.fromtimestamp(float(t), UTC).isoformat(timespec="seconds")
                                        for t, _ in series["values"])
    return out


# -- the run ------------------------------------------------------------------------------------------------
def make_tenant(profile: Profile, env: dict[str, str], run_id: str) -> tuple[str, str, str]:
    from tenancy import secrets as tenant_secrets
    from tenancy.broker import account_name
    from tenancy.registry import TenantRegistry
    from tenancy.settings import load_settings
    from tenancy.spec import TenantSpec

    tenant, prefix = f"soak{run_id}", f"hats/soak{run_id}/"
    registry = TenantRegistry(load_settings(env))
    registry.add(TenantSpec(id=tenant, name="chaos soak", topic_prefix=prefix, series_budget=200_000))
    password = registry.secrets.read(tenant, tenant_secrets.MQTT_HOMEASSISTANT)
    assert password is not None
    return tenant, prefix, f"{account_name(tenant, 'ha')}\n{password}"


def main() -> int:  # one run, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=5_000.0, help="MQTT messages per second")
    parser.add_argument("--devices", type=int, default=2_000)
    parser.add_argument("--speed", type=float, default=15.0, help="simulated seconds per wall second")
    parser.add_argument("--outbox-mib", type=int, default=16)
    parser.add_argument("--rollup-every", type=float, default=60.0, help="seconds between schedule ticks")
    parser.add_argument("--no-faults", action="store_true", help="the same load without faults (a baseline)")
    parser.add_argument("--child-rollup", help=argparse.SUPPRESS)
    parser.add_argument("--tenant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_rollup:
        return rollup_child(args.child_rollup, args.tenant)

    from ha_simulator.messages import Topics
    from ha_simulator.publish import Publisher, RunOptions, Target, run
    from ha_simulator.simulation import SimulationConfig
    from ingest_worker.tls import mqtt_context

    profile = load_profile("test")
    env = stack.up(profile)
    secrets = stack.secrets_for(profile)
    run_id = uuid.uuid4().hex[:8]
    run_dir = profile.path("soak", run_id)
    run_dir.mkdir(parents=True)
    tenant, prefix, account = make_tenant(profile, env, run_id)
    username, password = account.split("\n")
    soak = Soak(profile, env, secrets, tenant, prefix, args.outbox_mib * 1024**2, run_dir)
    log(f"soak {run_id}: home {tenant}, {args.minutes:.0f} min at {args.rate:.0f} msg/s, {args.devices} devices, "
        f"speed {args.speed:g}, outbox bound {args.outbox_mib} MiB; logs in {run_dir}")
    # A soak stopped before its end left its worker registered: Prometheus would report it down all through
    # this run, and the end check would take that HatsWorkerDown for this run's.
    for stale in prometheus.targets_dir(profile).glob("soak-*.json"):
        prometheus.unregister_worker(profile, stale.stem)
    prometheus.register_worker(profile, soak.worker_name, soak.http_port)
    soak.start_worker()
    watcher = threading.Thread(target=soak.watch, daemon=True)
    watcher.start()

    span = timedelta(seconds=args.minutes * 60 * args.speed)
    began_at = datetime.now(UTC)
    sim_start = began_at - span
    wall_start = time.monotonic()
    publisher = Resilient(Publisher(Target("127.0.0.1", int(env["HATS_MQTT_PORT"]), username, password, prefix,
                                                tls=mqtt_context(env))),
                          soak.stopping)
    # No dropouts: then a silence in the data can only be the platform's loss, and the cadence check (which
    # lists gaps) proves completeness rather than flagging the simulated devices' own outages.
    config = SimulationConfig(devices=args.devices, dropouts_per_hour=0,
                              topics=Topics(tenant_prefix=prefix.rstrip("/")))
    options = RunOptions(duration_s=args.minutes * 60, rate=args.rate, speed=args.speed, start=sim_start,
                         progress_every_s=60)
    stats_box: list[Any] = []
    sim_clock = [sim_start]
    simulator = threading.Thread(daemon=True, target=lambda: stats_box.append(
        run(publisher, config, options, on_time=lambda at: sim_clock.__setitem__(0, at))))
    simulator.start()
    scheduler = threading.Thread(target=rollups_through, daemon=True,
                                 args=(soak, sim_start, sim_clock, args.rollup_every))
    scheduler.start()

    total = args.minutes * 60
    plan: list[tuple[float, Callable[[], None]]] = [
        (0.10, lambda: soak.kill_influxdb(60)),
        (0.27, lambda: soak.kill_postgres(30)),
        (0.40, lambda: soak.restart_broker(down_s=10)),
        (0.50, lambda: soak.kill_worker_five_times(gap_s=total * 0.02, down_s=8)),
        (0.70, lambda: soak.fill_outbox(hold_s=30)),
    ]
    for fraction, fault in [] if args.no_faults else plan:
        due = wall_start + fraction * total
        soak.stopping.wait(max(0.0, due - time.monotonic()))  # the schedule of the faults, not a synchronisation
        try:
            fault()
        except TimeoutError as error:  # a promise broken, reported with the rest: the run's figures still count
            soak.events[-1]["failed"] = str(error)
            soak.events[-1]["end"] = soak.events[-1]["end"] or now()
            log(f"fault did not play out: {error}")
    simulator.join()
    stats = stats_box[0]
    log(f"simulator done: {stats.points} values in {stats.mqtt_messages} MQTT messages "
        f"({stats.mqtt_messages / stats.elapsed_s:.0f} msg/s); draining")
    drained_s = drain(soak, stats.points)
    soak.stopping.set()
    scheduler.join()
    watcher.join()
    stats.write_json(run_dir / "stats.json")
    by_entity = soak.points_by_entity()
    published = stats.entities  # built anew on every access: once here, not once per entity (22,401² in run B)
    # The worker also stores what Home Assistant says of itself (its status topic): not the simulator's values.
    written = sum(count for entity, count in by_entity.items() if entity in published)
    mismatched = {entity: {"published": e.values, "written": by_entity.get(entity, 0)}
                  for entity, e in published.items() if by_entity.get(entity, 0) != e.values}
    unknown = sorted(set(by_entity) - set(published))

    hours = []
    sim_end = datetime.fromtimestamp(stats.last_timestamp_us / 1e6, UTC)
    hour = sim_start.replace(minute=0, second=0, microsecond=0) + HOUR  # the first whole hour
    while hour + HOUR <= sim_end:  # every hour the simulator covered whole
        hours.append(hour)
        hour += HOUR
    final = [run_rollup(soak, h, "after the soak") for h in hours]
    failed_checks = sorted({f"{o['hour']}: {name}" for o in final for name, ok in o["checks"].items() if not ok})

    assert soak.worker is not None
    soak.worker.send_signal(signal.SIGTERM)
    clean_exit = soak.worker.wait(60)

    prom = f"http://127.0.0.1:{profile.ports['prometheus']}"
    expected = sorted({name for event in soak.events for name in event["alerts_expected"]})
    try:
        resolved_s: float | None = wait(lambda: not {a.name for a in alerts.firing(prom)} & set(expected),
                                        "the faults' alerts to resolve", RESOLVE_TIMEOUT_S)
    except TimeoutError:
        resolved_s = None
    fired = firing(prom, began_at, datetime.now(UTC))
    prometheus.unregister_worker(profile, soak.worker_name)
    alert_report = {"fired": {name: {"first": moments[0], "last": moments[-1], "samples": len(moments)}
                              for name, moments in sorted(fired.items())},
                    "firing_at_end": sorted({a.name for a in alerts.firing(prom)}),
                    "resolved_after_s": None if resolved_s is None else round(resolved_s, 1)}
    missed = [f"{name} ({event['fault']})" for event in soak.events for name in event["alerts_expected"]
              if not any(event["start"] <= moment <= grace(event["end"]) for moment in fired.get(name, []))]
    alert_report["expected_but_not_fired"] = missed
    report = {
        "minutes": args.minutes, "rate_target_msg_s": args.rate,
        "published_values": stats.points, "written_points": written,
        "published_equals_written": written == stats.points,
        "mqtt_messages": stats.mqtt_messages, "rate_achieved_msg_s": round(stats.mqtt_messages / stats.elapsed_s),
        "entities_mismatched": len(mismatched), "mismatched_sample": dict(list(mismatched.items())[:10]),
        "entities_not_published": unknown[:10],
        "publisher_retries": publisher.retries, "drained_after_s": None if drained_s is None else round(drained_s, 1),
        "dead_letters": soak.dead_letters(), "crashes": soak.crashes, "worker_kills": soak.kills_expected,
        "worker_clean_exit": clean_exit, "peaks": soak.peaks, "faults": soak.events,
        "rollup_runs": len(soak.rollups), "rollup_runs_failed": sum(not o["success"] for o in soak.rollups),
        "rollup_failures": [o["failure"][:200] for o in soak.rollups if not o["success"]],
        "hours_checked": len(final), "checks_failed_after": failed_checks, "alerts": alert_report,
    }
    print(json.dumps(report, indent=2, default=str))
    broken = []
    if written != stats.points:
        broken.append(f"published {stats.points} values, InfluxDB holds {written}")
    if soak.crashes:
        broken.append(f"{len(soak.crashes)} crashes")
    broken.extend(f"{event['fault']}: {event['failed']}" for event in soak.events if "failed" in event)
    if drained_s is None:
        broken.append("InfluxDB never held every published value with the outbox empty")
    if clean_exit != 0:
        broken.append(f"the worker exited {clean_exit} on SIGTERM")
    if failed_checks or not all(o["success"] for o in final):
        broken.append(f"rollups after the soak: {failed_checks or 'a run failed'}")
    if not final:
        broken.append("no closed hour to roll up")
    if missed:
        broken.append(f"alerts that should have fired did not: {missed}")
    if resolved_s is None:
        broken.append(f"alerts still firing at the end: {alert_report['firing_at_end']}")
    for problem in broken:
        log(f"BROKEN: {problem}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
