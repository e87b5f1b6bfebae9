"""One resource per external system, every field described, secrets bound from the environment."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dagster as dg
import httpx
import msgpack  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
import psycopg
from pydantic import Field

from ingest_worker.contract import RAW_RP, database_for, tls_client_context

QUERY_TIMEOUT_S = 300.0
# Lines per /write request: large enough to amortise HTTP, small enough for InfluxDB 1.x's default
# max-body-size (25 MB) once gzip is undone.
WRITE_CHUNK_LINES = 50_000
CONNECT_TIMEOUT_S = 10
CONNECTIONS = 8  # the rollup's parallel reads (READ_SLICES + 3) and writers (2) fit


def window_params(start: datetime, end: datetime) -> dict[str, str]:
    """Bound parameters ``$start``/``$end`` of a query over ``[start, end)``."""
    return {"start": start.isoformat(), "end": end.isoformat()}


def quote_ident(name: str) -> str:
    """An InfluxQL identifier, quoted and escaped: measurement names come from device metadata."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def qualified(rp: str, *measurements: str) -> str:
    """``"rp"."m1", "rp"."m2"``: measurements of one retention policy for a FROM clause, each quoted."""
    return ", ".join(f"{quote_ident(rp)}.{quote_ident(name)}" for name in measurements)


@functools.cache
def pooled_client(url: str, ca_file: str) -> httpx.Client:
    """One pooled HTTP client per InfluxDB URL for the process (thread-safe, kept-alive connections).

    A request through ``httpx.post`` builds a client each time, and with it an SSL context that loads the
    CA bundle: measured 40 ms a request, 16 s of a 20-home hour's 48 s run (400 queries); one client per
    URL makes it once. Credentials travel per request, so accounts share it. An https:// InfluxDB is
    verified with ``ca_file`` (the system's trust store when empty).
    """
    return httpx.Client(base_url=url.rstrip("/"), timeout=QUERY_TIMEOUT_S, verify=tls_client_context(ca_file or None),
                        limits=httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS))


class InfluxQueryError(RuntimeError):
    """InfluxDB answered a query with an error; the message carries its text and the query."""


class InfluxUnreachable(InfluxQueryError):
    """The write gate (its front or its retention endpoint) answered 503: it could not reach InfluxDB behind it.
    A store outage like a refused connection (``common/faults.py`` retries it), not a bad query."""

    def __init__(self, url: str, body: str, request: str) -> None:
        super().__init__(f"InfluxDB behind the write gate at {url} is unreachable: {body[:300]} ({request})")
        self.url = url
        self.happened = "did not answer in time" if "Timeout" in body else "refused the connection"


def raise_unreachable(url: str, response: httpx.Response, request: str) -> None:
    """Raise ``InfluxUnreachable`` for the gate's 503 (InfluxDB away behind it), for a query or a write alike:
    a write refused that way is an outage to retry, not a rollup InfluxDB rejected. ``request`` says which
    (``query: …`` or ``write to db.rp``)."""
    if response.status_code == 503 and "the gate could not reach InfluxDB" in response.text:
        raise InfluxUnreachable(url, response.text, request)


class InfluxDBResource(dg.ConfigurableResource):
    """InfluxDB through the v1 HTTP API (`/query`, `/write`), served by 1.x and by 2.x/3.x compatibility.

    One account for every home: the database is the tenant's at hand (``for_tenant``), never a field of the
    resource, so one run serves many homes and each query names exactly one home's database.
    """

    url: str = Field(description="InfluxDB base URL, e.g. http://127.0.0.1:18086")
    username: str = Field(description="the InfluxDB account this resource acts as")
    password: str = Field(description="its password")
    ca_file: str = Field(default="", description="CA certificate (PEM) an `https://` InfluxDB is verified with "
                                                 "(the local stack's `.hats/<profile>/tls/ca.pem`); set it empty for "
                                                 "the system's trust store or a plaintext InfluxDB")

    def for_tenant(self, tenant: str) -> TenantInflux:
        """The home's database ``hats_<tenant>`` through this account (the id is checked by ``database_for``)."""
        return TenantInflux(self, tenant, database_for(tenant))

    def post_query(self, database: str, influxql: str, params: Mapping[str, Any] | None, accept: str) -> httpx.Response:
        """No gzip: compressing a day of points costs InfluxDB's CPU, the rollup's bottleneck (measured
        8.5 s with gzip vs 5.3 s without for 4.3 M points); answers travel over loopback or a LAN."""
        data = {"q": influxql, "db": database, "rp": RAW_RP, "epoch": "ns"}
        if params:
            data["params"] = json.dumps(params)
        response = pooled_client(self.url, self.ca_file).post("/query", data=data, auth=(self.username, self.password),
                                          headers={"Accept": accept, "Accept-Encoding": "identity"})
        raise_unreachable(self.url, response, f"query: {influxql}")
        if response.status_code != 200:
            raise InfluxQueryError(f"InfluxDB answered {response.status_code}: {response.text[:300]} "
                                   f"(query: {influxql})")
        return response

    def post_write(self, database: str, lines: Sequence[str], rp: str) -> int:
        """Uncompressed: InfluxDB's CPU is the bottleneck and gunzip is on it (1.44 M rollup lines: 9.7 s
        gzip'd, 6.7 s plain; 4.9 s plain from two threads). Raises ``InfluxQueryError`` naming InfluxDB's
        reason: a rollup that cannot be stored must fail, never be half-reported as success."""
        for begin in range(0, len(lines), WRITE_CHUNK_LINES):
            response = pooled_client(self.url, self.ca_file).post(
                "/write", params={"db": database, "rp": rp, "precision": "ns"},
                content="\n".join(lines[begin:begin + WRITE_CHUNK_LINES]).encode(),
                auth=(self.username, self.password),
            )
            raise_unreachable(self.url, response, f"write to {database}.{rp}")
            if response.status_code != 204:
                raise InfluxQueryError(f"InfluxDB refused a write to {database}.{rp} "
                                       f"({response.status_code}): {response.text[:300]}")
        return len(lines)


@dataclass(frozen=True, slots=True)
class TenantInflux:
    """One home's InfluxDB database, reached through the code location's account."""

    resource: InfluxDBResource
    tenant: str
    database: str

    def query(self, influxql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one statement with bound parameters; return its series (name, tags, columns, values)."""
        return results(self.resource.post_query(self.database, influxql, params, "application/json").json(), influxql)

    def queries(self, statements: Sequence[str], params: Mapping[str, Any] | None = None) -> list[list[dict[str, Any]]]:
        """Several statements in ONE request (InfluxQL takes them ``;``-separated, sharing the bound
        parameters); the series of each, in order. A request costs a round trip and InfluxDB's
        authentication whatever it holds: a home's rollup deletes its seven windows in one."""
        body = self.resource.post_query(self.database, ";\n".join(statements), params, "application/json").json()
        answers: list[list[dict[str, Any]]] = [[] for _ in statements]
        for result in body.get("results", []):
            statement = statements[int(result.get("statement_id", 0))]
            answers[int(result.get("statement_id", 0))] = results({"results": [result]}, statement)
        return answers

    def query_points(self, influxql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Like ``query`` but for millions of points: InfluxDB's MessagePack answer.

        Measured on one day of 1,000 entities at 10 s (8.64 M points): JSON 24 s and 262 MB, CSV 31 s
        and 642 MB (name and tags repeated on every row), MessagePack 11–15 s and 164 MB; serialising
        is InfluxDB's bottleneck, so big reads are also split in time and run side by side.
        """
        response = self.resource.post_query(self.database, influxql, params, "application/x-msgpack")
        return results(msgpack.unpackb(response.content), influxql)

    def query_float_series(
        self, influxql: str, params: Mapping[str, Any] | None = None
    ) -> list[tuple[str, dict[str, str], npt.NDArray[np.int64], npt.NDArray[np.float64]]]:
        """A ``SELECT <one float field> … GROUP BY <tags>`` answer as (name, tags, times, values) arrays.

        InfluxDB's MessagePack rows of such a query are all ``[int64 time, float64 value]``: 19 bytes each,
        so a series' rows are read straight into numpy instead of becoming millions of Python lists
        (measured: 8.64 M points parsed in ~0.3 s instead of ~12 s). Anything else (an error included)
        falls back to the general decoding, with the same result.
        """
        body = self.resource.post_query(self.database, influxql, params, "application/x-msgpack").content
        try:
            return _float_series_fast(body)
        except _NotFixedRows:
            out = []
            for series in results(msgpack.unpackb(body), influxql):
                rows = series.get("values", [])
                times = np.array([row[0] for row in rows], dtype=np.int64)
                values = np.array([row[1] for row in rows], dtype=np.float64)
                out.append((series["name"], series.get("tags", {}), times, values))
            return out

    def write(self, lines: Sequence[str], rp: str) -> int:
        """Write line protocol (ns precision) into retention policy ``rp``; returns the lines written."""
        return self.resource.post_write(self.database, lines, rp)


def results(body: dict[str, Any], influxql: str) -> list[dict[str, Any]]:
    """The series of an InfluxDB /query answer (JSON or MessagePack, decoded); its first error raised
    with the statement that caused it. The one reader of InfluxDB's answers in the code location."""
    series: list[dict[str, Any]] = []
    for result in body.get("results", []):
        if "error" in result:
            raise InfluxQueryError(f"InfluxDB: {result['error']} (query: {influxql})")
        series.extend(result.get("series", []))
    return series


class _NotFixedRows(Exception):
    """The answer is not made of [int64, float64] rows only: decode it the general way."""


# One MessagePack row [time, value]: fixarray(2), int64 marker + big-endian int64, float64 marker + double.
_ROW = np.dtype([("array", "u1"), ("int64", "u1"), ("time", ">i8"), ("float64", "u1"), ("value", ">f8")])
_ROW_MARKERS = (0x92, 0xD3, 0xCB)


def _float_series_fast(
    body: bytes,
) -> list[tuple[str, dict[str, str], npt.NDArray[np.int64], npt.NDArray[np.float64]]]:
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(body) + 1)
    unpacker.feed(body)
    out = []
    for _ in range(unpacker.read_map_header()):  # {"results": [...]}
        if unpacker.unpack() != "results":
            raise _NotFixedRows
        for _ in range(unpacker.read_array_header()):
            for _ in range(unpacker.read_map_header()):  # {"statement_id": 0, "series": [...]} or "error"
                key = unpacker.unpack()
                if key != "series":
                    if key == "error":
                        raise _NotFixedRows
                    unpacker.skip()
                    continue
                for _ in range(unpacker.read_array_header()):
                    series: dict[str, Any] = {}
                    for _ in range(unpacker.read_map_header()):
                        name = unpacker.unpack()
                        if name != "values":
                            series[name] = unpacker.unpack()
                            continue
                        count = unpacker.read_array_header()
                        rows = np.frombuffer(unpacker.read_bytes(count * _ROW.itemsize), dtype=_ROW)
                        markers = (rows["array"], rows["int64"], rows["float64"])
                        if any(bool(np.any(m != want)) for m, want in zip(markers, _ROW_MARKERS, strict=True)):
                            raise _NotFixedRows
                        series["times"] = rows["time"].astype(np.int64)
                        series["floats"] = rows["value"].astype(np.float64)
                    if len(series.get("columns", [])) != 2:  # exactly time and one field
                        raise _NotFixedRows
                    out.append((series["name"], series.get("tags", {}), series.get("times", _NO_TIMES),
                                series.get("floats", _NO_FLOATS)))
    return out


_NO_TIMES: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)
_NO_FLOATS: npt.NDArray[np.float64] = np.empty(0, dtype=np.float64)


class PostgresResource(dg.ConfigurableResource):
    """The hats warehouse database, as role hats_dagster.

    A step serving many homes opens ONE connection for all of them (``session``): each ``connect`` block
    inside it is its own transaction on that connection. A run of 20 homes opened ~370 connections before
    (12 ms each, 4.4 s of the hour's 27 s). The role is the same for every home, so sharing the connection
    shares nothing a home could see. Outside a session (a sensor, another thread) every block connects.
    """

    dsn: str = Field(description="libpq URL of role hats_dagster on database hats (the warehouse)")

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """One connection for the ``connect`` blocks of this thread until the block ends (nested: the outer)."""
        current = _SESSION.get()
        if current is not None and current.dsn == self.dsn:
            yield
            return
        session = _Session(self.dsn)
        token = _SESSION.set(session)
        try:
            yield
        finally:
            _SESSION.reset(token)
            session.close()

    @contextlib.contextmanager
    def connect(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """One transaction: committed when the block ends, rolled back if it raises (a block inside
        another one is a savepoint of it)."""
        session = _SESSION.get()
        if session is None or session.dsn != self.dsn:
            with psycopg.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                yield conn
            return
        conn = session.connection()
        with conn.transaction():
            yield conn


class _Session:
    """A step's connection, opened on first use (autocommit: every ``connect`` block is one explicit
    transaction) and opened again if the server dropped it."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# The open session of this thread (a new thread starts without one: psycopg connections are not shared).
_SESSION: ContextVar[_Session | None] = ContextVar("hats_postgres_session", default=None)


# What each InfluxDB resource's account is for (the README's Dagster settings table shows it by its variables).
RESOURCE_ROLES = {
    "influxdb": "InfluxDB account with ALL on the tenant databases (`hats_dagster`)",
    "influxdb_retention": "the write gate's retention endpoint: `retention` alters a home's `raw`/`rollup` "
                          "durations, `usage_daily` lists shards (InfluxDB 1.x lets only an admin; the gate holds "
                          "the admin credential, the code location none)",
}


def resources_from_env() -> dict[str, Any]:
    return {
        "influxdb": InfluxDBResource(
            url=dg.EnvVar("HATS_INFLUX_URL"),
            username=dg.EnvVar("HATS_INFLUX_DAGSTER_USERNAME"),
            password=dg.EnvVar("HATS_INFLUX_DAGSTER_PASSWORD"),
            ca_file=dg.EnvVar("HATS_INFLUX_CA_FILE"),
        ),
        "postgres": PostgresResource(dsn=dg.EnvVar("HATS_DAGSTER_DSN")),
    }
