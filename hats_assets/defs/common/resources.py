"""One resource per external system, every field described, secrets bound from the environment."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
import httpx
import psycopg
from pydantic import Field

from ingest_worker.contract import RAW_RP, database_for

QUERY_TIMEOUT_S = 300.0


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

    def query(self, influxql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one statement with bound parameters; return its series (name, tags, columns, values)."""
        data = {"q": influxql, "db": self.database, "rp": RAW_RP, "epoch": "ns"}
        if params:
            data["params"] = json.dumps(params)
        response = httpx.post(f"{self.url.rstrip('/')}/query", data=data, auth=(self.username, self.password),
                              timeout=QUERY_TIMEOUT_S)
        if response.status_code != 200:
            raise InfluxQueryError(f"InfluxDB answered {response.status_code}: {response.text[:300]} "
                                   f"(query: {influxql})")
        series: list[dict[str, Any]] = []
        for result in response.json().get("results", []):
            if "error" in result:
                raise InfluxQueryError(f"InfluxDB: {result['error']} (query: {influxql})")
            series.extend(result.get("series", []))
        return series


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
