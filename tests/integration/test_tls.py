"""TLS on the real stack: each service (Mosquitto, InfluxDB, PostgreSQL) refuses a client without the
stack's CA, a client that expects another host name and a plaintext client; `hats certs renew` makes the
running services present new certificates that clients still accept; the worker's metric equals the
notAfter of what each peer serves."""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
from cryptography import x509
from paho.mqtt.enums import CallbackAPIVersion

from devstack import certs
from devstack.procs import port_open
from devstack.profile import PROJECT_ROOT, Profile
from ingest_worker.tls import client_context, presented_not_after
from tests.conftest import Tenant, WorkerProcess, wait_for
from tests.mqtt import connect_code

WRONG_HOST = "not-in-the-certificate.invalid"
DSNS = ("HATS_PG_DSN", "HATS_INGEST_DSN", "HATS_DAGSTER_DSN", "HATS_ANALYST_DSN", "HATS_DAGSTER_PG_URL")
# MQTT 3.1.1 CONNECT, client id "x", no credentials: what a plaintext client sends first.
PLAIN_CONNECT = bytes([0x10, 13, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 1]) + b"x"


def served_not_after(port: int, *, postgres: bool = False) -> float:
    """The served certificate's notAfter, read from the handshake's DER with `cryptography` (an
    independent reading of what the worker reports through the stdlib)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        if postgres:
            raw.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
            assert raw.recv(1) == b"S"
        with context.wrap_socket(raw) as sock:
            der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()


def paho_connect(port: int, context: ssl.SSLContext, env: dict[str, str]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
    client.username_pw_set(env["HATS_MQTT_USERNAME"], env["HATS_MQTT_PASSWORD"])
    client.tls_set_context(context)
    try:
        client.connect("127.0.0.1", port)
    finally:
        client.disconnect()


# -- Mosquitto ---------------------------------------------------------------------------------------
def test_broker_refuses_a_client_without_the_ca(stack_env: dict[str, str]) -> None:
    port = int(stack_env["HATS_MQTT_PORT"])
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        paho_connect(port, client_context(None), stack_env)  # the system's trust store only
    paho_connect(port, client_context(stack_env["HATS_MQTT_CA_FILE"]), stack_env)  # with the CA: accepted


def test_broker_refuses_a_wrong_host_name(stack_env: dict[str, str]) -> None:
    context = client_context(stack_env["HATS_MQTT_CA_FILE"])
    port = int(stack_env["HATS_MQTT_PORT"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            pytest.raises(ssl.SSLCertVerificationError, match=f"Hostname mismatch.*'{WRONG_HOST}'"):
        context.wrap_socket(raw, server_hostname=WRONG_HOST)
    assert presented_not_after("localhost", port, context) > 0  # a name the certificate holds: accepted


def test_broker_refuses_plaintext(profile: Profile, stack_env: dict[str, str]) -> None:
    """The TLS port ends a plaintext CONNECT without a CONNACK; no plaintext listener is open."""
    port = int(stack_env["HATS_MQTT_PORT"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(PLAIN_CONNECT)
        try:
            answer = raw.recv(4)
        except ConnectionResetError:
            answer = b""
        assert answer == b""  # closed (or reset), no CONNACK (0x20 …)
    assert not port_open(profile.ports["mqtt_plain"])
    code = connect_code(port, stack_env["HATS_MQTT_USERNAME"], stack_env["HATS_MQTT_PASSWORD"])
    assert not code.is_failure  # the same account over TLS


# -- PostgreSQL --------------------------------------------------------------------------------------
def with_params(dsn: str, **params: str) -> str:
    base, _, query = dsn.partition("?")
    kept = dict(pair.split("=", 1) for pair in query.split("&") if pair)
    return base + "?" + "&".join(f"{k}={v}" for k, v in {**kept, **params}.items())


def test_postgres_dsns_are_verify_full_with_the_ca(stack_env: dict[str, str]) -> None:
    for name in DSNS:
        assert "sslmode=verify-full" in stack_env[name], name
        assert f"sslrootcert={stack_env['HATS_MQTT_CA_FILE']}" in stack_env[name], name
        with psycopg.connect(stack_env[name], connect_timeout=10) as conn:
            row = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row is not None, name
        assert row[0] is True, name
        assert row[1] in ("TLSv1.2", "TLSv1.3"), name


def test_postgres_refuses_a_client_without_the_ca(stack_env: dict[str, str]) -> None:
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(with_params(stack_env["HATS_INGEST_DSN"], sslrootcert="system"), connect_timeout=10)


def test_postgres_refuses_a_wrong_host_name(stack_env: dict[str, str]) -> None:
    dsn = with_params(stack_env["HATS_INGEST_DSN"], hostaddr="127.0.0.1")
    wrong = dsn.replace("@127.0.0.1:", f"@{WRONG_HOST}:", 1)
    with pytest.raises(psycopg.OperationalError, match=re.escape(f'does not match host name "{WRONG_HOST}"')):
        psycopg.connect(wrong, connect_timeout=10)
    with psycopg.connect(dsn.replace("@127.0.0.1:", "@localhost:", 1), connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)  # a name the certificate holds: accepted


def test_postgres_refuses_plaintext_for_every_role(stack_env: dict[str, str]) -> None:
    for name in DSNS:
        with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects connection .* no encryption"):
            psycopg.connect(with_params(stack_env[name], sslmode="disable"), connect_timeout=10)


# -- InfluxDB ----------------------------------------------------------------------------------------
def test_influxdb_is_https_and_refuses_a_client_without_the_ca(stack_env: dict[str, str]) -> None:
    url = stack_env["HATS_INFLUX_URL"]
    assert url.startswith("https://")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{url}/ping", timeout=10)  # httpx's own CA bundle
    assert httpx.get(f"{url}/ping", timeout=10, verify=client_context(stack_env["HATS_INFLUX_CA_FILE"])) \
        .status_code == 204


def test_influxdb_refuses_a_wrong_host_name(stack_env: dict[str, str]) -> None:
    verify = client_context(stack_env["HATS_INFLUX_CA_FILE"])
    with httpx.Client(verify=verify, timeout=10) as client, \
            pytest.raises(httpx.ConnectError, match="Hostname mismatch"):
        client.get(f"{stack_env['HATS_INFLUX_URL']}/ping", extensions={"sni_hostname": WRONG_HOST})


def test_influxdb_refuses_plaintext(stack_env: dict[str, str], tenant: Tenant) -> None:
    """Plain HTTP to InfluxDB's HTTPS front (the write gate process) gets no answer and writes nothing."""
    plain = stack_env["HATS_INFLUX_URL"].replace("https://", "http://", 1)
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{plain}/write", params={"db": tenant.database, "rp": "raw"}, timeout=10,
                   content="plain value=1 1700000000000000000",
                   auth=(stack_env["HATS_INFLUX_ADMIN_USERNAME"], stack_env["HATS_INFLUX_ADMIN_PASSWORD"]))
    assert tenant.influx("SELECT * FROM plain") == []


# -- renewal and the metric --------------------------------------------------------------------------
def served_by_each(stack_env: dict[str, str]) -> dict[str, float]:
    return {"mosquitto": served_not_after(int(stack_env["HATS_MQTT_PORT"])),
            "influxdb": served_not_after(int(stack_env["HATS_INFLUX_URL"].rsplit(":", 1)[1])),
            "postgresql": served_not_after(int(stack_env["HATS_INGEST_DSN"].split("@127.0.0.1:")[1].split("/")[0]),
                                           postgres=True)}


def test_renew_serves_later_certificates_that_clients_still_accept(profile: Profile,
                                                                   stack_env: dict[str, str]) -> None:
    before = served_by_each(stack_env)
    files = {service: certs.not_after(certs.cert_file(profile, service)).timestamp() for service in certs.SERVICES}
    assert before == files  # what each service serves is the stack's file
    ca = certs.ca_file(profile).read_bytes()
    env = {**os.environ, "HATS_PORT_OFFSET": os.environ.get("HATS_PORT_OFFSET", "0")}
    result = subprocess.run([sys.executable, "-m", "devstack.cli", "--profile", "test", "certs", "renew"],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    after = served_by_each(stack_env)
    for service in certs.SERVICES:
        renewed = certs.not_after(certs.cert_file(profile, service))
        assert after[service] == renewed.timestamp(), service
        assert after[service] > before[service], service
        assert f"renewed {service}" in result.stdout
        assert f"{renewed:%Y-%m-%d %H:%M:%S} UTC" in result.stdout
    assert certs.ca_file(profile).read_bytes() == ca  # the same CA: clients need nothing new
    assert not connect_code(int(stack_env["HATS_MQTT_PORT"]), stack_env["HATS_MQTT_USERNAME"],
                            stack_env["HATS_MQTT_PASSWORD"]).is_failure
    with psycopg.connect(stack_env["HATS_INGEST_DSN"], connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert httpx.get(f"{stack_env['HATS_INFLUX_URL']}/ping", timeout=10,
                     verify=client_context(stack_env["HATS_INFLUX_CA_FILE"])).status_code == 204


def labelled(worker: WorkerProcess, name: str) -> dict[str, float]:
    text = httpx.get(f"{worker.url}/metrics", timeout=10).text
    return {line.split('peer="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith(name + "{")}


def test_worker_exports_each_peers_certificate_expiry(tenant: Tenant, stack_env: dict[str, str],
                                                      start_worker: Callable[..., WorkerProcess]) -> None:
    served = served_by_each(stack_env)
    worker = start_worker(tenant.env)
    exported = wait_for(lambda: (found := labelled(worker, "hats_tls_cert_not_after_seconds")).keys()
                        == {"mqtt", "influxdb", "postgresql"} and found, "the three peers' certificate expiry")
    assert exported == {"mqtt": served["mosquitto"], "influxdb": served["influxdb"],
                        "postgresql": served["postgresql"]}
    assert min(exported.values()) > dt.datetime.now(dt.UTC).timestamp()


def test_worker_names_a_missing_ca_file(tenant: Tenant, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    result = subprocess.run([sys.executable, "-m", "ingest_worker"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, **tenant.env, "HATS_MQTT_CA_FILE": str(missing)}, cwd=PROJECT_ROOT,
                            check=False)
    assert result.returncode != 0
    assert f"HATS_MQTT_CA_FILE={missing} cannot be read" in result.stderr
