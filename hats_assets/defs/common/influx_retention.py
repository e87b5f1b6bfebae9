"""The Dagster code location's way to the InfluxDB write gate's retention endpoint (influx_gate/retention.py).

InfluxDB 1.x lets only an admin alter a retention policy or list shards; the code location needs both
(retention, billing) but holds no admin credential: the gate does, and takes from the code location exactly
``ALTER RETENTION POLICY "raw"|"rollup" ON "hats_<tenant>" DURATION <n>h``, ``SHOW SHARDS`` and
``SHOW STATS FOR 'shard'``, with the code location's own credential. Everything else the code location reads
(a home's ``SHOW RETENTION POLICIES`` too) goes through its own InfluxDB account (``influxdb``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import httpx
from pydantic import Field

from hats_assets.defs.common.resources import InfluxDBResource, InfluxQueryError, pooled_client, raise_unreachable

SETTINGS = "HATS_INFLUX_RETENTION_URL/_USERNAME/_PASSWORD"


class InfluxRetentionResource(InfluxDBResource):
    """The gate's retention endpoint: one statement a request, answered in InfluxDB's own shape (so a home's
    ``for_tenant(...).query`` reads it like InfluxDB's)."""

    url: str = Field(description="The write gate's URL (its HATS_INFLUX_GATE_PORT), e.g. http://127.0.0.1:18087")
    username: str = Field(description="The code location's account on the gate (its "
                                      "HATS_INFLUX_GATE_RETENTION_USERNAME)")
    password: str = Field(description="Its password (HATS_INFLUX_GATE_RETENTION_PASSWORD)")

    def post_query(self, database: str, influxql: str, params: Mapping[str, Any] | None,
                   accept: str) -> httpx.Response:
        """``database`` and ``params`` are not sent: the statement names its database and binds nothing."""
        response = pooled_client(self.url, self.ca_file).post(
            "/query", data={"q": influxql}, auth=(self.username, self.password),
            headers={"Accept": "application/json", "Accept-Encoding": "identity"})
        if response.status_code == 200:
            return response
        raise_unreachable(self.url, response, f"query: {influxql}")
        if response.status_code == 401:
            raise InfluxQueryError(f"the write gate at {self.url} refused the retention credential: set "
                                   "HATS_INFLUX_RETENTION_USERNAME/_PASSWORD to the gate's "
                                   "HATS_INFLUX_GATE_RETENTION_USERNAME/_PASSWORD")
        if response.status_code == 403 and "write-only gate" in response.text:
            raise InfluxQueryError(f"the write gate at {self.url} has no retention endpoint: set the gate's "
                                   "HATS_INFLUX_GATE_RETENTION_USERNAME/_PASSWORD and HATS_INFLUX_GATE_ADMIN_"
                                   "USERNAME/_PASSWORD, and point HATS_INFLUX_RETENTION_URL at its write port")
        raise InfluxQueryError(f"the write gate's retention endpoint ({SETTINGS}) answered {response.status_code}: "
                               f"{response.text[:300]} (query: {influxql})")

    def post_write(self, database: str, lines: Sequence[str], rp: str) -> int:
        raise InfluxQueryError("the retention endpoint writes no points: write through the `influxdb` resource")


def retention_resource_from_env() -> InfluxRetentionResource:
    return InfluxRetentionResource(url=dg.EnvVar("HATS_INFLUX_RETENTION_URL"),
                                   username=dg.EnvVar("HATS_INFLUX_RETENTION_USERNAME"),
                                   password=dg.EnvVar("HATS_INFLUX_RETENTION_PASSWORD"),
                                   ca_file=dg.EnvVar("HATS_INFLUX_CA_FILE"))
