"""The line-protocol reader the fuzz properties trust, held to the real InfluxDB: any point the worker's
encoder accepts — hostile tag values and state text under the measurements the worker makes — is stored
exactly as the reader reads it. (Measurements are device-class identifiers; hostile measurement text is
the unit property's, tests/unit/test_fuzz_lineprotocol.py.)"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest_worker.contract import Point
from ingest_worker.lineprotocol import encode
from ingest_worker.normalise import DEVICE_CLASS
from ingest_worker.rejections import Rejected
from ingest_worker.tls import client_context
from tests.conftest import Tenant
from tests.ha_strategies import any_text, examples
from tests.lineprotocol_reader import read_line

pytestmark = pytest.mark.integration

text = any_text | st.text(st.sampled_from('\\ ,="#\tab\x00é'), max_size=12)
measurements = st.from_regex(DEVICE_CLASS)


def test_what_the_encoder_accepts_influxdb_stores_as_the_reader_reads_it(tenant: Tenant) -> None:
    auth = (tenant.env["HATS_INFLUX_ADMIN_USERNAME"], tenant.env["HATS_INFLUX_ADMIN_PASSWORD"])
    recent_ns = time.time_ns() - 3_600 * 10**9 + 123_456_789  # inside the raw retention, every digit set

    # Inside the test, so that a failure prints the example, never the tenant's credentials.
    @examples(120)
    @given(measurement=measurements, device_id=text, state=text | st.none(),
           value=st.floats(allow_nan=False) | st.none())
    def stored_as_read(measurement: str, device_id: str, state: str | None, value: float | None) -> None:
        probe = uuid.uuid4().hex
        point = Point(measurement, (("device_id", device_id), ("probe", probe)), recent_ns,
                      value=value, state=state if value is None else None)
        try:
            line = encode(point)
        except Rejected:
            return  # refused before InfluxDB: the unit properties hold the reason
        expected = read_line(line)
        response = httpx.post(f"{tenant.env['HATS_INFLUX_URL']}/write", params={"db": tenant.database},
                              content=line.encode(), auth=auth, timeout=30,
                              verify=client_context(tenant.env["HATS_INFLUX_CA_FILE"]))
        assert response.status_code == 204, (line, response.text)
        series = tenant.influx(f"SELECT * FROM \"{measurement}\" WHERE probe = '{probe}'")
        assert len(series) == 1, (line, series)
        stored = dict(zip(series[0]["columns"], series[0]["values"][0], strict=True))
        assert (series[0]["name"], stored["device_id"], stored["time"]) == (
            expected.measurement, dict(expected.tags)["device_id"], expected.time_ns), line
        field, wanted = next(iter(expected.fields.items()))
        # InfluxDB's JSON writes a whole float without a fraction (6.7e16 as 67200000000000000).
        got = float(stored[field]) if isinstance(wanted, float) else stored[field]
        assert got == wanted, line

    stored_as_read()
