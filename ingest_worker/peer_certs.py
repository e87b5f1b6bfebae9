"""The expiry of the certificate each TLS peer presents, as `hats_tls_cert_not_after_seconds{peer}`.

A certificate that lapses stops the platform at once (every client refuses it), so an operator is warned
weeks ahead from the worker's own view of its peers: every HATS_TLS_PROBE_S the worker makes a TLS handshake
with the broker, InfluxDB and PostgreSQL, verified with the same CA and host name as its real connections,
and exports the notAfter of the certificate each presented. libpq hides the peer certificate from psycopg,
so PostgreSQL is read the way libpq opens TLS (SSLRequest, then the handshake). A plaintext peer has no
series; a failing probe is logged and keeps the last value.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from ingest_worker import metrics, tls
from ingest_worker.settings import WorkerSettings

log = logging.getLogger(__name__)

# libpq's default sslrootcert when a DSN names none.
LIBPQ_DEFAULT_ROOT = Path.home() / ".postgresql" / "root.crt"
VERIFYING_SSLMODES = frozenset({"verify-ca", "verify-full"})


@dataclass(frozen=True)
class Peer:
    name: str
    host: str
    port: int
    context: ssl.SSLContext
    postgres: bool = False


def _postgres_peer(dsn: str) -> Peer | None:
    params = conninfo_to_dict(dsn)
    mode = str(params.get("sslmode", "prefer"))
    if mode not in VERIFYING_SSLMODES:
        return None  # unverified or no TLS: nothing trustworthy to report
    root = str(params.get("sslrootcert", LIBPQ_DEFAULT_ROOT))
    context = tls.client_context(None if root == "system" else root)
    context.check_hostname = mode == "verify-full"
    host = str(params.get("hostaddr") or params.get("host") or "localhost").split(",")[0]
    return Peer("postgresql", host, int(str(params.get("port") or 5432).split(",")[0]), context, postgres=True)


def peers(settings: WorkerSettings) -> list[Peer]:
    """The worker's TLS peers, each with the context its real connection verifies with."""
    found = []
    if settings.mqtt_sources() and (context := settings.mqtt_tls_context()) is not None:
        found.append(Peer("mqtt", settings.mqtt_host, settings.mqtt_port, context))
    if (address := tls.https_host_port(settings.influx_write_url)) is not None:
        found.append(Peer("influxdb", *address, settings.influx_verify()))
    if (pg := _postgres_peer(settings.ingest_dsn.get_secret_value())) is not None:
        found.append(pg)
    return found


def probe(peer: Peer) -> float:
    not_after = tls.presented_not_after(peer.host, peer.port, peer.context, postgres=peer.postgres)
    metrics.TLS_CERT_NOT_AFTER.labels(peer=peer.name).set(not_after)
    return not_after


async def watch(settings: WorkerSettings) -> None:
    """Probe every peer now and then every HATS_TLS_PROBE_S, until cancelled."""
    known = peers(settings)
    while True:
        for peer in known:
            try:
                await asyncio.to_thread(probe, peer)
            except (OSError, ssl.SSLError) as exc:
                log.warning("TLS peer %s (%s:%s): cannot read its certificate: %s",
                            peer.name, peer.host, peer.port, exc)
        await asyncio.sleep(settings.tls_probe_s)
