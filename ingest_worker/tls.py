"""TLS for the clients of the platform's peers (MQTT broker, InfluxDB, PostgreSQL): one way to build the
verifying context, one way to check a CA setting, one way to read the certificate a peer presents.

Every client here verifies the peer's certificate against a CA file named by a setting (the stack's
`ca.pem`, or a managed service's CA) and its host name against the certificate's names; TLS 1.2 is the
oldest version offered. Without a CA file the system's trust store is used (a managed service with a
public certificate). Plaintext stays possible where a user's own broker or InfluxDB has no TLS: the
settings say so explicitly (`HATS_MQTT_TLS=0`, an `http://` InfluxDB URL, `sslmode` in a DSN).

The stdlib only: the worker's image must not grow for this.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

TLS_MINIMUM = ssl.TLSVersion.TLSv1_2
PROBE_TIMEOUT_S = 10.0
# PostgreSQL's SSLRequest: length 8, code 1234.5679; the server answers one byte, S (TLS follows) or N.
PG_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def client_context(ca_file: Path | str | None) -> ssl.SSLContext:
    """A context that verifies the peer (chain and host name) against `ca_file`, or the system store."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = TLS_MINIMUM
    return context


def ca_file_problem(path: Path | None) -> str | None:
    """Why a CA file setting cannot be used (missing, unreadable, not PEM), or None when it can."""
    if path is None:
        return None
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"cannot be read ({exc.strerror}): point it at the CA certificate (PEM) of the service's certificate"
    if "-----BEGIN CERTIFICATE-----" not in text:
        return "holds no PEM certificate: point it at the CA certificate that signed the service's certificate"
    try:
        client_context(path)
    except ssl.SSLError as exc:
        return f"is not a usable CA certificate ({exc.reason})"
    return None


def _not_after(sock: ssl.SSLSocket) -> float:
    cert = sock.getpeercert()
    if not cert or "notAfter" not in cert:
        raise ssl.SSLError("the peer presented no certificate")
    return float(ssl.cert_time_to_seconds(str(cert["notAfter"])))


def presented_not_after(host: str, port: int, context: ssl.SSLContext, *, postgres: bool = False,
                        timeout_s: float = PROBE_TIMEOUT_S) -> float:
    """notAfter (Unix seconds) of the certificate the peer at host:port presents, verified with `context`
    (a handshake only; no credentials are sent). `postgres`: ask for TLS with SSLRequest first, as libpq does."""
    with socket.create_connection((host, port), timeout=timeout_s) as raw:
        if postgres:
            raw.sendall(PG_SSL_REQUEST)
            answer = raw.recv(1)
            if answer != b"S":
                raise ssl.SSLError(f"PostgreSQL at {host}:{port} does not offer TLS")
        with context.wrap_socket(raw, server_hostname=host) as sock:
            return _not_after(sock)


def https_host_port(url: str) -> tuple[str, int] | None:
    """(host, port) of an https:// URL, None for http:// (no certificate to read)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return None
    return parts.hostname, parts.port or 443


def settings_problems(mqtt_tls: bool, mqtt_ca_file: Path | None, influx_url: str,
                      influx_ca_file: Path | None, url_setting: str = "HATS_INFLUX_URL") -> list[str]:
    """What is wrong with a set of TLS settings (the worker's and `hats tenant`'s), each naming its variable."""
    problems = []
    if mqtt_ca_file is not None and not mqtt_tls:
        problems.append("HATS_MQTT_CA_FILE is set but HATS_MQTT_TLS is off: set HATS_MQTT_TLS=1 for a TLS broker, "
                        "or unset the CA file for a plaintext one")
    if influx_ca_file is not None and not influx_url.startswith("https://"):
        problems.append(f"HATS_INFLUX_CA_FILE is set but {url_setting} ({influx_url}) is not https://: use the "
                        "https:// URL of a TLS InfluxDB, or unset the CA file for a plaintext one")
    for name, path in (("HATS_MQTT_CA_FILE", mqtt_ca_file), ("HATS_INFLUX_CA_FILE", influx_ca_file)):
        if (problem := ca_file_problem(path)) is not None:
            problems.append(f"{name}={path} {problem}")
    return problems


def mqtt_context(environ: Mapping[str, str]) -> ssl.SSLContext | None:
    """The broker's context from a stack's settings (the tools' and tests' env mappings, not the worker's
    validated settings): HATS_MQTT_TLS=1 with HATS_MQTT_CA_FILE, None for a plaintext broker."""
    if environ.get("HATS_MQTT_TLS", "0") != "1":
        return None
    return client_context(environ.get("HATS_MQTT_CA_FILE") or None)
