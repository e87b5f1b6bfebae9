"""The InfluxDB write gate (influx_gate/) as a process of the stack, between every client and InfluxDB.

Its write gate (`HATS_INFLUX_GATE_PORT`) takes the worker's credential and forwards only writes; its front
(`HATS_INFLUX_PORT`, the env file's `HATS_INFLUX_URL`) forwards everything but /debug/* for InfluxDB's own
accounts. Both reach InfluxDB over its unix socket: InfluxDB's own listeners are in its network namespace
(devstack/influxdb.py). The process holds the InfluxDB WRITE account's password, passed in its own
environment only (never in the env file the worker's settings come from); its retention endpoint (on the write
gate's port) takes the code location's credential and acts as the InfluxDB admin. Ready when the write gate's
/ping answers 204, which it forwards from InfluxDB.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

from devstack import certs
from devstack.procs import Managed, ensure_port_free, wait_until
from devstack.profile import LOOPBACK, PROJECT_ROOT, Profile
from ingest_worker.tls import client_context

# The worker's account on the gate (not an InfluxDB account: InfluxDB does not know it).
WORKER_USER = "hats_worker"
# The Dagster code location's account on the gate's retention endpoint (nor is it an InfluxDB account).
RETENTION_USER = "hats_retention"


def process(profile: Profile) -> Managed:
    return Managed("influx_gate", profile.path("run", "influx_gate.pid"), profile.path("logs", "influx_gate.log"))


def url(profile: Profile) -> str:
    return f"https://{LOOPBACK}:{profile.ports['influx_gate']}"


def gate_env(profile: Profile, secrets: dict[str, str], socket: Path, writer: str, admin: str) -> dict[str, str]:
    """The gate's settings (influx_gate/settings.py) for this stack: InfluxDB at `socket`, writing as `writer`,
    the retention endpoint acting as `admin`."""
    return {
        "HATS_INFLUX_GATE_HOST": LOOPBACK,
        "HATS_INFLUX_GATE_PORT": str(profile.ports["influx_gate"]),
        "HATS_INFLUX_GATE_UPSTREAM_URL": "http://localhost",
        "HATS_INFLUX_GATE_UPSTREAM_SOCKET": str(socket),
        "HATS_INFLUX_GATE_FRONT_HOST": LOOPBACK,
        "HATS_INFLUX_GATE_FRONT_PORT": str(profile.ports["influx"]),
        "HATS_INFLUX_GATE_UPSTREAM_USERNAME": writer,
        "HATS_INFLUX_GATE_UPSTREAM_PASSWORD": secrets["influx_writer"],
        "HATS_INFLUX_GATE_USERNAME": WORKER_USER,
        "HATS_INFLUX_GATE_PASSWORD": secrets["influx_gate_worker"],
        # Both listeners serve HTTPS with the stack's InfluxDB certificate (devstack/certs.py).
        "HATS_INFLUX_GATE_TLS_CERT_FILE": str(certs.cert_file(profile, "influxdb")),
        "HATS_INFLUX_GATE_TLS_KEY_FILE": str(certs.key_file(profile, "influxdb")),
        "HATS_INFLUX_GATE_RETENTION_USERNAME": RETENTION_USER,
        "HATS_INFLUX_GATE_RETENTION_PASSWORD": secrets["influx_gate_retention"],
        "HATS_INFLUX_GATE_ADMIN_USERNAME": admin,
        "HATS_INFLUX_GATE_ADMIN_PASSWORD": secrets["influx_admin"],
    }


def ready(profile: Profile) -> bool:
    try:
        with urllib.request.urlopen(f"{url(profile)}/ping", timeout=1,  # noqa: S310 (loopback)
                                    context=client_context(certs.ca_file(profile))) as resp:
            return bool(resp.status == 204)
    except (urllib.error.URLError, OSError):
        return False


def start(profile: Profile, secrets: dict[str, str], socket: Path, writer: str, admin: str) -> None:
    """Start the gate process (idempotent) in front of InfluxDB's `socket` (devstack/influxdb.py starts it)."""
    proc = process(profile)
    if not proc.running():
        ensure_port_free(profile.ports["influx_gate"], "HATS_INFLUX_GATE_PORT", "the InfluxDB write gate")
        ensure_port_free(profile.ports["influx"], "HATS_INFLUX_PORT", "InfluxDB's front (the write gate process)")
        proc.start([sys.executable, "-m", "influx_gate"], env=gate_env(profile, secrets, socket, writer, admin),
                   cwd=PROJECT_ROOT)
    wait_until(lambda: ready(profile), "the InfluxDB write gate", log=proc.log)


def stop(profile: Profile) -> bool:
    return process(profile).stop()
