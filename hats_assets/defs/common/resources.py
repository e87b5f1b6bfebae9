"""One resource per external system, every field described, secrets bound from the environment."""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
import httpx
import msgpack  # type: ignore[import-untyped]
import psycopg
from pydantic import Field

from ingest_worker.contract import RAW_RP, database_for

QUERY_TIMEOUT_S = 300.0
# Lines per /write request: large enough to amortise HTTP, small enough for InfluxDB 1.x's default
# max-body-size (25 MB) once gzip is undone.
WRITE_CHUNK_LINES = 50_000


def quote_ident(name: str) -> str:
    """An InfluxQL identifier, quoted and escaped: measurement names come from device metadata."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class InfluxQueryError(RuntimeError):
    """InfluxDB answered a query with an error; the message carries its text and the query."""


class InfluxDBResource(dg.ConfigurableResource):
    """InfluxDB through the v1 HTTP API (`/query`), served by 1.x and by 2.x/3.x compatibility."""

    url: str = Field(description="Base URL, e.g. http://127.0.0.1:18086 (HATS_INFLUX_URL)")
    username: str = Field(description="Account with ALL on the tenant databases (HATS_INFLUX_DAGSTER_USERNAME)")
    password: str = Field(description="Its password (HATS_INFLUX_DAGSTER_PASSWORD)")
    tenant: str = Field(default="home", description="Tenant whose database hats_<tenant> is read (HATS_TENANT)")

    @property
    def database(self) -> str:
        return database_for(self.tenant)

    def _post_query(self, influxql: str, params: Mapping[str, Any] | None, accept: str) -> httpx.Response:
        data = {"q": influxql, "db": self.database, "rp": RAW_RP, "epoch": "ns"}
        if params:
            data["params"] = json.dumps(params)
        response = httpx.post(f"{self.url.rstrip('/')}/query", data=data, auth=(self.username, self.password),
                              headers={"Accept": accept}, timeout=QUERY_TIMEOUT_S)
        if response.status_code != 200:
            raise InfluxQueryError(f"InfluxDB answered {response.status_code}: {response.text[:300]} "
                                   f"(query: {influxql})")
        return response

    def query(self, influxql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one statement with bound parameters; return its series (name, tags, columns, values)."""
        response = self._post_query(influxql, params, "application/json")
        series: list[dict[str, Any]] = []
        for result in response.json().get("results", []):
            if "error" in result:
                raise InfluxQueryError(f"InfluxDB: {result['error']} (query: {influxql})")
            series.extend(result.get("series", []))
        return series

    def query_points(self, influxql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Like ``query`` but for millions of points: InfluxDB's MessagePack answer.

        Measured on one day of 1,000 entities at 10 s (8.64 M points): JSON 24 s and 262 MB, CSV 31 s
        and 642 MB (name and tags repeated on every row), MessagePack 11–15 s and 164 MB; serialising
        is InfluxDB's bottleneck, so big reads are also split in time and run side by side.
        """
        response = self._post_query(influxql, params, "application/x-msgpack")
        body = msgpack.unpackb(response.content)
        series: list[dict[str, Any]] = []
        for result in body.get("results", []):
            if "error" in result:
                raise InfluxQueryError(f"InfluxDB: {result['error']} (query: {influxql})")
            series.extend(result.get("series", []))
        return series

    def write(self, lines: Sequence[str], rp: str) -> int:
        """Write line protocol (ns precision) into retention policy ``rp``; returns the lines written.

        Raises ``InfluxQueryError`` naming InfluxDB's reason: a rollup that cannot be stored must fail
        its run, never be half-reported as success.
        """
        for begin in range(0, len(lines), WRITE_CHUNK_LINES):
            body = gzip.compress("\n".join(lines[begin:begin + WRITE_CHUNK_LINES]).encode(), compresslevel=1)
            response = httpx.post(
                f"{self.url.rstrip('/')}/write", params={"db": self.database, "rp": rp, "precision": "ns"},
                content=body, headers={"Content-Encoding": "gzip"}, auth=(self.username, self.password),
                timeout=QUERY_TIMEOUT_S,
            )
            if response.status_code != 204:
                raise InfluxQueryError(f"InfluxDB refused a write to {self.database}.{rp} "
                                       f"({response.status_code}): {response.text[:300]}")
        return len(lines)


class PostgresResource(dg.ConfigurableResource):
    """The hats warehouse database, as role hats_dagster."""

    dsn: str = Field(description="libpq URL of role hats_dagster on database hats (HATS_DAGSTER_DSN)")

    @contextlib.contextmanager
    def connect(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with psycopg.connect(self.dsn, connect_timeout=10) as conn:
            yield conn


def resources_from_env() -> dict[str, Any]:
    return {
        "influxdb": InfluxDBResource(
            url=dg.EnvVar("HATS_INFLUX_URL"),
            username=dg.EnvVar("HATS_INFLUX_DAGSTER_USERNAME"),
            password=dg.EnvVar("HATS_INFLUX_DAGSTER_PASSWORD"),
            tenant=dg.EnvVar("HATS_TENANT"),
        ),
        "postgres": PostgresResource(dsn=dg.EnvVar("HATS_DAGSTER_DSN")),
    }
