"""The write gate in front of InfluxDB (influx_gate/): the worker's credential writes and does nothing else.

Against the test stack's real InfluxDB 1.6 and the gate `hats up` starts. The finding it closes is shown
first: InfluxDB's own WRITE account can delete history; the worker no longer holds that account.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import http.client
import json
import time
import urllib.parse
import uuid

import httpx
import pytest

from devstack import influxdb
from devstack.profile import Profile
from influx_gate.server import header_value
from ingest_worker.store.influx import InfluxWriter, LineError
from ingest_worker.tls import client_context
from tests.conftest import Tenant

pytestmark = pytest.mark.integration

DESTRUCTIVE = [
    "DROP RETENTION POLICY raw ON {db}",
    "DELETE FROM gate_probe",
    "DROP SERIES FROM gate_probe",
    "DROP MEASUREMENT gate_probe",
    "DROP DATABASE {db}",
]


def _worker(env: dict[str, str]) -> tuple[str, str]:
    return env["HATS_INFLUX_USERNAME"], env["HATS_INFLUX_PASSWORD"]


def _write(env: dict[str, str], lines: list[str], *, db: str, rp: str = "raw", auth: tuple[str, str] | None = None,
           gzipped: bool = True, client: httpx.Client | None = None) -> httpx.Response:
    """A /write through the gate, or with `client` (InfluxDB's own socket) directly."""
    body = "\n".join(lines).encode()
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body, compresslevel=1), "gzip"
    with client or httpx.Client(base_url=env["HATS_INFLUX_WRITE_URL"],
        verify=client_context(env["HATS_INFLUX_CA_FILE"])) as http:
        return http.post("/write", params={"db": db, "rp": rp, "precision": "ns"}, content=body, headers=headers,
                         auth=auth or _worker(env), timeout=60)


def _influxdb_itself(profile: Profile) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(influxdb.socket_path(profile))),
                        base_url="http://localhost")


def _count(tenant: Tenant, measurement: str) -> int:
    series = tenant.influx(f'SELECT count(value) FROM raw."{measurement}"')
    return int(series[0]["values"][0][1]) if series else 0


def _probe_lines(n: int, measurement: str = "gate_probe") -> list[str]:
    now = time.time_ns()
    return [f"{measurement},entity_id=sensor.p{i % 50} value={i}.5 {now - i * 1000}" for i in range(n)]


def test_influxdbs_write_account_can_delete_history_which_is_why_only_the_gate_holds_it(
        tenant: Tenant, secrets: dict[str, str]) -> None:
    """The finding, reproduced on InfluxDB 1.6: an account with WRITE only runs DELETE on its database."""
    assert _write(tenant.env, _probe_lines(10), db=tenant.database).status_code == 204
    assert _count(tenant, "gate_probe") == 10
    deleted = httpx.post(f"{tenant.env['HATS_INFLUX_URL']}/query", data={"q": "DELETE FROM gate_probe",
                                                                         "db": tenant.database},
                         auth=(influxdb.WRITER_USER, secrets["influx_writer"]), timeout=30,
                         verify=client_context(tenant.env["HATS_INFLUX_CA_FILE"]))
    assert deleted.status_code == 200
    assert "error" not in deleted.json()["results"][0]
    assert _count(tenant, "gate_probe") == 0
    # …and that account's password is in no setting a worker reads.
    assert secrets["influx_writer"] not in tenant.env.values()


def test_writes_through_the_gate_land(tenant: Tenant) -> None:
    lines = _probe_lines(2_000)
    assert _write(tenant.env, lines, db=tenant.database).status_code == 204
    assert _write(tenant.env, _probe_lines(3, "gate_plain"), db=tenant.database, gzipped=False).status_code == 204
    assert _count(tenant, "gate_probe") == len(lines)
    assert _count(tenant, "gate_plain") == 3


def test_a_large_body_streams_through(tenant: Tenant) -> None:
    """~12 MB of line protocol, uncompressed, in one request (InfluxDB's max-body-size is 50 MB)."""
    now = time.time_ns()
    lines = [f"gate_big,entity_id=sensor.e{i % 997} value={i}.25 {now - i}" for i in range(200_000)]
    assert len("\n".join(lines)) > 10_000_000
    assert _write(tenant.env, lines, db=tenant.database, gzipped=False).status_code == 204
    assert _count(tenant, "gate_big") == len(lines)


@pytest.mark.parametrize("statement", DESTRUCTIVE)
def test_the_workers_credential_runs_no_statement_through_the_gate_nor_directly(tenant: Tenant,
                                                                                statement: str) -> None:
    assert _write(tenant.env, _probe_lines(5), db=tenant.database).status_code == 204
    q = statement.format(db=tenant.database)
    for method in ("GET", "POST"):
        through = httpx.request(method, f"{tenant.env['HATS_INFLUX_WRITE_URL']}/query",
                                params={"q": q, "db": tenant.database}, auth=_worker(tenant.env), timeout=30,
        verify=client_context(tenant.env["HATS_INFLUX_CA_FILE"]))
        # /query is the retention endpoint's path now: it takes POST only, and only its own credential.
        assert through.status_code == (405 if method == "GET" else 401), through.text
        assert "retention endpoint" in through.json()["error"]
    direct = httpx.post(f"{tenant.env['HATS_INFLUX_URL']}/query", data={"q": q, "db": tenant.database},
                        auth=_worker(tenant.env), timeout=30, verify=client_context(tenant.env["HATS_INFLUX_CA_FILE"]))
    assert direct.status_code == 401, direct.text
    assert _count(tenant, "gate_probe") == 5
    assert "raw" in {row[0] for row in tenant.influx("SHOW RETENTION POLICIES")[0]["values"]}


@pytest.mark.parametrize("path", ["/query", "/debug/vars", "/debug/requests", "/debug/pprof/", "/api/v2/write",
                                  "/write/../query", "/"])
def test_the_gate_refuses_every_other_path(stack_env: dict[str, str], path: str) -> None:
    response = httpx.get(f"{stack_env['HATS_INFLUX_WRITE_URL']}{path}", auth=_worker(stack_env), timeout=10,
        verify=client_context(stack_env["HATS_INFLUX_CA_FILE"]))
    assert response.status_code in (403, 405), response.text
    error = response.json()["error"]
    assert "gate" in error or "retention endpoint" in error, error


def test_a_wrong_or_missing_gate_password_is_refused(tenant: Tenant) -> None:
    user, _ = _worker(tenant.env)
    for auth in ((user, "wrong"), ("hats_writer", tenant.env["HATS_INFLUX_PASSWORD"]),
                 (tenant.env["HATS_INFLUX_ADMIN_USERNAME"], tenant.env["HATS_INFLUX_ADMIN_PASSWORD"])):
        refused = _write(tenant.env, _probe_lines(1), db=tenant.database, auth=auth)
        assert refused.status_code == 401, refused.text
    anonymous = httpx.post(f"{tenant.env['HATS_INFLUX_WRITE_URL']}/write", params={"db": tenant.database},
                           content=b"gate_probe value=1", timeout=10,
        verify=client_context(tenant.env["HATS_INFLUX_CA_FILE"]))
    assert anonymous.status_code == 401
    # Credentials in the URL are refused (they end up in logs), even the right ones.
    user, password = _worker(tenant.env)
    in_url = httpx.post(f"{tenant.env['HATS_INFLUX_WRITE_URL']}/write",
                        params={"db": tenant.database, "u": user, "p": password},
                        content=b"gate_probe value=1", auth=(user, password), timeout=10,
        verify=client_context(tenant.env["HATS_INFLUX_CA_FILE"]))
    assert in_url.status_code == 400
    assert _count(tenant, "gate_probe") == 0


@pytest.mark.parametrize(("params", "status"), [
    ({"db": "_internal"}, 403),
    ({"db": "analytics"}, 403),
    ({"db": "hats_Bad-Name"}, 403),
    ({"rp": "autogen"}, 403),
    ({"rp": "monitor"}, 403),
    ({"precision": "weeks"}, 400),
])
def test_the_gate_writes_only_home_databases_and_their_policies(tenant: Tenant, params: dict[str, str],
                                                                status: int) -> None:
    query = {"db": tenant.database, "rp": "raw", "precision": "ns"} | params
    response = httpx.post(f"{tenant.env['HATS_INFLUX_WRITE_URL']}/write", params=query,
                          content=b"gate_probe value=1", auth=_worker(tenant.env), timeout=10,
        verify=client_context(tenant.env["HATS_INFLUX_CA_FILE"]))
    assert response.status_code == status, response.text
    assert _count(tenant, "gate_probe") == 0


def test_influxdbs_answers_come_back_as_they_are(profile: Profile, tenant: Tenant, secrets: dict[str, str]) -> None:
    """The worker bisects on a 400 and reads InfluxDB's error text: status, body and headers are InfluxDB's.
    Compared with the same request made to InfluxDB itself (its socket) with the account the gate writes with."""
    account = (influxdb.WRITER_USER, secrets["influx_writer"])
    cases = [
        ({"db": tenant.database}, ["gate_bad value=1.0 1", "not line protocol"]),   # a partial write: 400
        ({"db": tenant.database}, ["gate_probe value=\"a string\""]),                # field type conflict: 400
        ({"db": f"hats_nope{uuid.uuid4().hex[:8]}"}, ["gate_probe value=1.0"]),     # no such database
    ]
    assert _write(tenant.env, ["gate_probe value=1.0"], db=tenant.database).status_code == 204
    for params, lines in cases:
        through = _write(tenant.env, lines, db=params["db"])
        direct = _write(tenant.env, lines, db=params["db"], auth=account, client=_influxdb_itself(profile))
        assert (through.status_code, through.text) == (direct.status_code, direct.text)
        assert through.status_code >= 400
        assert through.headers["Content-Type"] == direct.headers["Content-Type"]
        assert through.headers["X-Influxdb-Version"] == direct.headers["X-Influxdb-Version"]
        assert through.headers.get("X-Influxdb-Error") == direct.headers.get("X-Influxdb-Error")


def test_a_refused_line_with_control_bytes_is_influxdbs_400_and_a_dead_letter_not_a_stuck_batch(
        profile: Profile, tenant: Tenant, secrets: dict[str, str]) -> None:
    """InfluxDB echoes the refused line in X-Influxdb-Error, control bytes and all, which no HTTP server may
    send: the gate escapes them in the header (the body is InfluxDB's, as it is), so the worker reads a 400,
    bisects, and the line is its one LineError while the rest of the batch lands."""
    bad = "gate_ctl\x01bad\x00line"
    account = (influxdb.WRITER_USER, secrets["influx_writer"])
    with pytest.raises(httpx.RemoteProtocolError, match="illegal header line"):  # InfluxDB's own answer
        _write(tenant.env, [bad], db=tenant.database, auth=account, client=_influxdb_itself(profile))
    through = _write(tenant.env, [bad], db=tenant.database)  # a NUL: no parser reads it, the gate says so
    assert through.status_code == 400
    assert "InfluxDB's answer could not be read" in json.loads(through.text)["error"]
    control = "gate_ctl\x01bad"  # readable, but no server may send it back: escaped in the header
    direct_answer = _write(tenant.env, [control], db=tenant.database, auth=account, client=_influxdb_itself(profile))
    through = _write(tenant.env, [control], db=tenant.database)
    assert (through.status_code, through.text) == (direct_answer.status_code, direct_answer.text)
    assert through.status_code == 400
    assert through.headers["X-Influxdb-Error"] == header_value(direct_answer.headers["X-Influxdb-Error"])
    assert "\\x01" in through.headers["X-Influxdb-Error"]

    good = _probe_lines(40, "gate_ctl")
    env = tenant.env
    through_gate = InfluxWriter(env["HATS_INFLUX_WRITE_URL"], tenant.database, *_worker(env), 30.0,
                                verify=client_context(env["HATS_INFLUX_CA_FILE"]))
    # InfluxDB itself, whose answer to that line httpx cannot read: the writer bisects after repeats, /ping up.
    direct = InfluxWriter("http://localhost", tenant.database, *account, 30.0, client=httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(influxdb.socket_path(profile))), base_url="http://localhost",
        auth=account, timeout=30.0))

    async def write(writer: InfluxWriter, lines: list[str]) -> list[LineError]:
        try:
            return await writer.write(lines, retry=True)
        finally:
            await writer.aclose()

    errors = asyncio.run(asyncio.wait_for(write(through_gate, [*good[:13], bad, *good[13:]]), 120))
    assert [error.line for error in errors] == [bad]
    assert _count(tenant, "gate_ctl") == len(good)
    again = _probe_lines(30, "gate_ctl_direct")
    errors = asyncio.run(asyncio.wait_for(write(direct, [*again[:7], bad, *again[7:]]), 120))
    assert [error.line for error in errors] == [bad]
    assert "could not be read 3 times in a row while it answered /ping" in errors[0].error
    assert _count(tenant, "gate_ctl_direct") == len(again)


def test_the_gate_keeps_connections_alive(tenant: Tenant) -> None:
    parsed = urllib.parse.urlsplit(tenant.env["HATS_INFLUX_WRITE_URL"])
    assert parsed.hostname is not None
    assert parsed.port is not None
    conn = http.client.HTTPSConnection(parsed.hostname, parsed.port, timeout=30,
                                       context=client_context(tenant.env["HATS_INFLUX_CA_FILE"]))
    authorization = "Basic " + base64.b64encode(":".join(_worker(tenant.env)).encode()).decode()
    query = urllib.parse.urlencode({"db": tenant.database, "rp": "raw", "precision": "ns"})
    sockets = []
    try:
        for i in range(3):
            conn.request("POST", f"/write?{query}", body=f"gate_probe value={i}.0 {time.time_ns()}".encode(),
                         headers={"Authorization": authorization})
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 204
            sockets.append(conn.sock)
    finally:
        conn.close()
    assert sockets[0] is not None
    assert sockets.count(sockets[0]) == 3, "each write opened a new connection"
    assert _count(tenant, "gate_probe") == 3


def test_influxdb_away_is_a_503_and_the_gate_writes_again_when_it_is_back(
        profile: Profile, tenant: Tenant, secrets: dict[str, str]) -> None:
    """The worker keeps a batch on a 5xx or no answer (its outbox): the gate answers 503, never a 2xx or 4xx."""
    assert _write(tenant.env, ["gate_probe value=1.0"], db=tenant.database).status_code == 204
    ping = httpx.get(f"{tenant.env['HATS_INFLUX_WRITE_URL']}/ping", timeout=10,
        verify=client_context(tenant.env["HATS_INFLUX_CA_FILE"]))
    assert ping.status_code == 204
    assert "X-Influxdb-Version" in ping.headers
    influxdb.stop(profile)
    try:
        away = _write(tenant.env, ["gate_probe value=2.0"], db=tenant.database)
        assert away.status_code == 503, away.text
        assert "could not reach InfluxDB" in away.json()["error"]
        assert httpx.get(f"{tenant.env['HATS_INFLUX_WRITE_URL']}/ping", timeout=10,
        verify=client_context(tenant.env["HATS_INFLUX_CA_FILE"])).status_code == 503
    finally:
        influxdb.start(profile, secrets)
    assert _write(tenant.env, ["gate_probe value=3.0"], db=tenant.database).status_code == 204
    assert _count(tenant, "gate_probe") == 2


def test_the_shared_worker_account_is_bounded_to_the_homes_databases(stack_env: dict[str, str], tenant: Tenant,
                                                                     secrets: dict[str, str]) -> None:
    """Registry mode: one worker writes every home's database with one gate account, as it did with one InfluxDB
    account. It is bounded to databases named as homes' (the gate) that InfluxDB granted the gate's account WRITE
    on (tenancy grants it per home): another database, even one made by hand with a home's name, is refused."""
    stray = f"hats_stray{uuid.uuid4().hex[:8]}"
    admin = (stack_env["HATS_INFLUX_ADMIN_USERNAME"], stack_env["HATS_INFLUX_ADMIN_PASSWORD"])
    made = httpx.post(f"{stack_env['HATS_INFLUX_URL']}/query", data={"q": f'CREATE DATABASE "{stray}"'}, auth=admin,
                      timeout=30, verify=client_context(stack_env["HATS_INFLUX_CA_FILE"]))
    assert made.status_code == 200
    try:
        refused = _write(stack_env, ["gate_probe value=1.0"], db=stray)
        assert refused.status_code == 403, refused.text
        assert "not authorized" in refused.text
        assert _write(stack_env, ["gate_probe value=1.0"], db=tenant.database).status_code == 204
    finally:
        httpx.post(f"{stack_env['HATS_INFLUX_URL']}/query", data={"q": f'DROP DATABASE "{stray}"'}, auth=admin,
                   timeout=30, verify=client_context(stack_env["HATS_INFLUX_CA_FILE"]))
