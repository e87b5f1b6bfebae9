"""Mosquitto 2 with the dynamic security plugin, and persistent sessions that queue QoS 0 too.

Accounts live in the plugin's JSON, not in a password file: `tenancy.broker.BrokerAdmin` changes them at
run time over `$CONTROL/dynamic-security/v1` (no restart, no SIGHUP, and the same for a managed broker in a
cluster). The stack writes the JSON once with the broker admin (`hats_broker_admin`, who may only use the
control topic), then makes the platform's accounts idempotently over the control topic on every start:

* `hats_worker` reads `#` and writes nothing. Worker accounts are the only ones not bound to a client id:
  each replica connects with its own `HATS_MQTT_CLIENT_ID`.
* `hats_homeassistant` — the real Home Assistant the tests run (tests/ha_peer.py): reads and writes
  `homeassistant/#` (discovery, birth) and `hats/+/homeassistant/#` (each session's statestream and
  eventstream). Unbound, since every test session's Home Assistant connects with it at once.
* `hats_publisher` — the demo's simulator (Home Assistant and its devices on the unprefixed topics):
  publishes `DEMO_TOPICS` only, never under `hats/`, where the homes' prefixes live; bound to its name.
* `hats_bench` — the benchmarks: publishes under `bench/` only; bound to its name.

The homes' own accounts (`home_<t>_ha`, `home_<t>_device`, …) are made by `hats tenant add`.

The stock `max_queued_messages 1000` silently drops QoS 1 messages for a slow subscriber (seen on
this machine), which would break the worker's promise that a published message is never lost: the
queue here is sized so that the broker holds a long InfluxDB outage's worth of traffic while the
worker applies backpressure. Home Assistant's mqtt_eventstream, zigbee2mqtt, ESPHome and Tasmota publish
at QoS 0 by default, and a QoS 1 subscription does not upgrade them: without `queue_qos0_messages` the
broker discards them for an offline persistent session (1,000 of 1,000 lost across a worker restart,
measured). The same per-client bounds apply to both QoS levels.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets as tokens
import shutil
from pathlib import Path
from typing import Any

from devstack import certs
from devstack.procs import Managed, ensure_port_free, port_open, wait_until
from devstack.profile import LOOPBACK, Profile
from ingest_worker.tls import client_context
from tenancy.broker import BrokerAccount, BrokerAdmin, reads, writes

SERVICE = "mosquitto"  # its certificate's name in devstack/certs.py

ADMIN_USER = "hats_broker_admin"
WORKER_USER = "hats_worker"
PUBLISHER_USER = "hats_publisher"
HOMEASSISTANT_USER = "hats_homeassistant"
BENCH_USER = "hats_bench"
HOMEASSISTANT_TOPICS = ("homeassistant/#", "hats/+/homeassistant/#")
# Topics Home Assistant and the device firmwares it bridges really publish on, unprefixed: the demo home.
DEMO_TOPICS = ("homeassistant/#", "zigbee2mqtt/#", "esphome/#", "tasmota/#", "shellies/#")
BENCH_TOPICS = ("bench/#",)
# (broker user, secret name in secrets.json)
ACCOUNTS = ((ADMIN_USER, "mqtt_broker_admin"), (WORKER_USER, "mqtt_worker"), (PUBLISHER_USER, "mqtt_publisher"),
            (HOMEASSISTANT_USER, "mqtt_homeassistant"), (BENCH_USER, "mqtt_bench"))
# 10 M messages / 2 GiB per client: hours of a large fleet while the worker pushes back.
MAX_QUEUED_MESSAGES = 10_000_000
MAX_QUEUED_BYTES = 2 * 1024**3
MAX_INFLIGHT_MESSAGES = 20_000
MESSAGE_SIZE_LIMIT = 256 * 1024
PLUGIN_DIR, PLUGIN_GLOB = Path("/usr/lib"), "*-linux-gnu/mosquitto_dynamic_security.so"
# What mosquitto_ctrl 2.0 writes. The passwords are random 192-bit tokens, so the hash's cost adds nothing.
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
DYNSEC_FILE = "dynamic-security.json"
# The admin's rights: the control topic only (mosquitto_ctrl's `dynsec init` also grants it every topic).
ADMIN_ACLS = ({"acltype": "publishClientSend", "topic": "$CONTROL/dynamic-security/#", "allow": True},
              {"acltype": "publishClientReceive", "topic": "$CONTROL/dynamic-security/#", "allow": True},
              {"acltype": "subscribePattern", "topic": "$CONTROL/dynamic-security/#", "allow": True})
# Everything not granted is refused: publishing, receiving and subscribing.
DEFAULT_ACL_ACCESS = {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                      "unsubscribe": True}


def process(profile: Profile) -> Managed:
    return Managed("mosquitto", profile.path("mosquitto", "mosquitto.pid"), profile.path("logs", "mosquitto.log"))


def _binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if found is None:
        raise FileNotFoundError("mosquitto is not installed; run `make bootstrap`")
    return found


def plugin_path() -> str:
    found = sorted(PLUGIN_DIR.glob(PLUGIN_GLOB))
    if not found:
        raise FileNotFoundError(f"Mosquitto's dynamic security plugin ({PLUGIN_DIR / PLUGIN_GLOB}) is missing; "
                                "run `make bootstrap` (Debian's mosquitto package ships it)")
    return str(found[0])


def hash_password(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> dict[str, Any]:
    """The `password`, `salt` and `iterations` fields of a dynsec client: PBKDF2-HMAC-SHA512 over the
    salt's bytes, stored base64 (the format mosquitto_ctrl writes)."""
    salt = tokens.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": iterations}


def render_dynsec(admin_password: str) -> dict[str, Any]:
    """The plugin's first JSON: the broker admin alone. The plugin rewrites the file on every change."""
    return {
        "clients": [{"username": ADMIN_USER, **hash_password(admin_password), "roles": [{"rolename": ADMIN_USER}]}],
        "roles": [{"rolename": ADMIN_USER, "acls": list(ADMIN_ACLS)}],
        "groups": [],
        "defaultACLAccess": DEFAULT_ACL_ACCESS,
    }


def platform_accounts(secrets: dict[str, str]) -> list[BrokerAccount]:
    return [
        BrokerAccount(WORKER_USER, secrets["mqtt_worker"], reads("#"), None,
                      "the ingest worker: reads every topic, writes none"),
        BrokerAccount(HOMEASSISTANT_USER, secrets["mqtt_homeassistant"],
                      tuple(acl for topic in HOMEASSISTANT_TOPICS for acl in (*reads(topic), *writes(topic))), None,
                      "the tests' real Home Assistant"),
        BrokerAccount(PUBLISHER_USER, secrets["mqtt_publisher"],
                      tuple(acl for topic in DEMO_TOPICS for acl in writes(topic)), PUBLISHER_USER,
                      "the demo's simulated home (unprefixed topics)"),
        BrokerAccount(BENCH_USER, secrets["mqtt_bench"], tuple(acl for t in BENCH_TOPICS for acl in writes(t)),
                      BENCH_USER, "the benchmarks' publishers (bench/#)"),
    ]


def admin(profile: Profile, secrets: dict[str, str]) -> BrokerAdmin:
    return BrokerAdmin(LOOPBACK, profile.ports["mqtt"], ADMIN_USER, secrets["mqtt_broker_admin"],
                       tls=client_context(certs.ca_file(profile)))


def tls_options(profile: Profile) -> list[str]:
    """A listener's TLS: 1.2+ with the stack's certificate, no client certificates (accounts log in with
    passwords). Mosquitto 2's `tls_version` is the oldest version it accepts."""
    return [f"certfile {certs.cert_file(profile, SERVICE)}", f"keyfile {certs.key_file(profile, SERVICE)}",
            "require_certificate false", "tls_version tlsv1.2"]


def _listeners(profile: Profile) -> list[str]:
    """TLS on HATS_MQTT_PORT; a plaintext listener only with HATS_MQTT_PLAINTEXT=1."""
    lines = [f"listener {profile.ports['mqtt']} {LOOPBACK}", *tls_options(profile)]
    if profile.mqtt_plaintext:
        lines.append(f"listener {profile.ports['mqtt_plain']} {LOOPBACK}")
    return lines


def render_config(profile: Profile) -> str:
    base = profile.path("mosquitto")
    return "\n".join([
        "# Generated by devstack/mosquitto.py: edit that file, not this one.",
        "per_listener_settings false",
        *_listeners(profile),
        "allow_anonymous false",
        f"plugin {plugin_path()}",
        f"plugin_opt_config_file {base / DYNSEC_FILE}",
        "persistence true",
        f"persistence_location {base / 'data'}/",
        "autosave_interval 30",
        # Running as root, Mosquitto would drop to the `mosquitto` user and lose access to this folder.
        "user root",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        # Queue QoS 0 for offline persistent sessions too (bounded by the two limits around it).
        "queue_qos0_messages true",
        f"max_queued_bytes {MAX_QUEUED_BYTES}",
        f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
        f"max_packet_size {MESSAGE_SIZE_LIMIT}",
        "persistent_client_expiration 14d",
        f"log_dest file {profile.path('logs', 'mosquitto.log')}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        "",
    ])


def start(profile: Profile, secrets: dict[str, str]) -> None:
    certs.ensure(profile)  # started alone (not by `hats up`): its certificate is made here
    proc = process(profile)
    base = profile.path("mosquitto")
    conf = base / "mosquitto.conf"
    if proc.running() and conf.exists() and conf.read_text() == render_config(profile):
        ensure_platform_accounts(profile, secrets)
        return
    if proc.running():
        # A broker started with an older configuration (the password file and ACL before the dynamic
        # security plugin): restart it on the new one; its persistence keeps every session and queue.
        proc.stop()
    ensure_port_free(profile.ports["mqtt"], "HATS_MQTT_PORT", "Mosquitto")
    if profile.mqtt_plaintext:
        ensure_port_free(profile.ports["mqtt_plain"], "HATS_MQTT_PLAINTEXT_PORT", "Mosquitto (plaintext)")
    (base / "data").mkdir(parents=True, exist_ok=True)
    base.chmod(0o700)  # the plugin rewrites its JSON (password hashes) with the default mode
    for stale in ("passwd", "acl"):
        (base / stale).unlink(missing_ok=True)
    dynsec = base / DYNSEC_FILE
    if not dynsec.exists():
        fd = os.open(dynsec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(render_dynsec(secrets["mqtt_broker_admin"]), handle, indent=2)
    conf.write_text(render_config(profile))
    proc.start([_binary(), "-c", str(conf)])
    wait_until(lambda: port_open(profile.ports["mqtt"]), "Mosquitto", log=proc.log)
    ensure_platform_accounts(profile, secrets)


def ensure_platform_accounts(profile: Profile, secrets: dict[str, str]) -> None:
    with admin(profile, secrets) as broker:
        for account in platform_accounts(secrets):
            broker.ensure_account(account)


def restart(profile: Profile, secrets: dict[str, str]) -> None:
    """Stop and start on the same configuration (new certificates): Mosquitto 2.0 reads its certificate
    files only at start; persistence keeps every session and queue across the restart."""
    process(profile).stop()
    start(profile, secrets)


def stop(profile: Profile) -> bool:
    return process(profile).stop()
