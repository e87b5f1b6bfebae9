"""The gate's HTTP servers: aiohttp in, one keep-alive connection pool to InfluxDB out (TCP, or its unix socket).

Two listeners. The write gate takes the worker's credential and forwards only writes to the homes' databases,
with the InfluxDB WRITE account; with the retention endpoint on, it also takes the Dagster code location's
credential for the few admin statements of ``retention.py``, run as the InfluxDB admin. The optional front takes
InfluxDB's own accounts (Dagster, the admin) and forwards everything but /debug/* as it is, credentials included:
with InfluxDB listening where nobody else reaches (the local stack: its own network namespace and a unix socket),
the front is the only TCP way in.

Bodies stream both ways (a 50 MB batch is never held whole) and stay as they are: a gzip body is forwarded
compressed (the listener does not decompress it), InfluxDB's status, error body and headers come back
unchanged, because the worker's outbox and retries read them (204 written, 400 bad lines to bisect, 5xx or no
answer: keep the batch). InfluxDB unreachable is a 503 with an error body, like a 5xx.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import aiohttp
from aiohttp import web

from influx_gate import policy, retention
from influx_gate.settings import GateSettings

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
UPSTREAM_CONNECTIONS = 64
# Request headers forwarded to InfluxDB (the write gate never forwards the client's Authorization; the front
# forwards it: InfluxDB authenticates its own accounts), and answer headers returned.
REQUEST_HEADERS = ("Content-Type", "Content-Encoding", "Content-Length", "Accept", "Accept-Encoding")
ANSWER_HEADERS = ("Content-Type", "Content-Encoding", "X-Influxdb-Version", "X-Influxdb-Build",
                  "X-Influxdb-Error", "Request-Id", "X-Request-Id", "Www-Authenticate")
# Bytes HTTP forbids in a header value (all controls but TAB): InfluxDB echoes a refused line, such bytes
# included, in X-Influxdb-Error, and aiohttp refuses to send them (the client got a 500 for InfluxDB's 400,
# which a writer retries as an outage: the batch never left). Each is sent as `\xNN`; the body is untouched.
HEADER_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
UPSTREAM_KEY: web.AppKey[aiohttp.ClientSession] = web.AppKey("upstream", aiohttp.ClientSession)
SETTINGS_KEY: web.AppKey[GateSettings] = web.AppKey("settings", GateSettings)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def refuse(status: int, error: str) -> web.Response:
    """InfluxDB's own error shape (`{"error": …}`), so a client reads the gate's refusals as it reads InfluxDB's."""
    return web.Response(status=status, text=json.dumps({"error": error}), content_type="application/json")


def header_value(value: str) -> str:
    """An answer header's value as HTTP allows it (`HEADER_CONTROLS` escaped)."""
    return HEADER_CONTROLS.sub(lambda found: f"\\x{ord(found.group()):02x}", value)


async def _forward(request: web.Request, path: str, params: Mapping[str, str], auth: aiohttp.BasicAuth | None,
                   extra_headers: Mapping[str, str] | None = None) -> web.StreamResponse:
    upstream = request.app[UPSTREAM_KEY]
    headers = {name: request.headers[name] for name in REQUEST_HEADERS if name in request.headers}
    headers |= extra_headers or {}
    body = request.content if request.body_exists else None
    response: web.StreamResponse | None = None
    try:
        async with upstream.request(request.method, path, params=params, data=body, headers=headers,
                                    auth=auth) as answer:
            response = web.StreamResponse(status=answer.status, reason=answer.reason)
            for name in ANSWER_HEADERS:
                if name in answer.headers:
                    response.headers[name] = header_value(answer.headers[name])
            if answer.content_length is not None:
                response.content_length = answer.content_length
            await response.prepare(request)
            async for chunk in answer.content.iter_chunked(CHUNK_BYTES):
                await response.write(chunk)
            await response.write_eof()
            return response
    except aiohttp.ClientResponseError as exc:
        if response is not None and response.prepared:
            raise
        # InfluxDB answered, with a header no HTTP parser reads (a refused line echoed with a NUL in
        # X-Influxdb-Error): a refusal, not an outage, so a 400 the writer bisects (a 5xx it would retry forever).
        log.warning("InfluxDB's answer to %s %s could not be read: %s", request.method, path, exc.message[:200])
        return refuse(400, f"InfluxDB's answer could not be read ({exc.message[:300]}): it refused a line of this "
                           "request and echoed it with bytes HTTP forbids")
    except (TimeoutError, aiohttp.ClientConnectionError) as exc:
        if response is not None and response.prepared:
            raise  # the answer has begun: the client sees the connection end, never a forged status
        log.warning("InfluxDB did not answer %s %s: %s", request.method, path, type(exc).__name__)
        return refuse(503, f"the gate could not reach InfluxDB ({type(exc).__name__}); nothing was done")


async def _admin_query(request: web.Request, statement: str) -> tuple[int, bytes, str]:
    """One statement as the InfluxDB admin: (status, body, content type) of InfluxDB's answer."""
    settings = request.app[SETTINGS_KEY]
    assert settings.admin_username is not None  # retention_on
    assert settings.admin_password is not None
    auth = aiohttp.BasicAuth(settings.admin_username, settings.admin_password.get_secret_value())
    async with request.app[UPSTREAM_KEY].post("/query", data={"q": statement}, auth=auth) as answer:
        return answer.status, await answer.read(), answer.headers.get("Content-Type", "application/json")


async def handle_retention(request: web.Request) -> web.StreamResponse:
    """The retention endpoint: the code location's credential, the statements of ``retention.parse`` only."""
    settings = request.app[SETTINGS_KEY]
    assert settings.retention_username is not None  # retention_on
    assert settings.retention_password is not None
    if request.method != "POST":
        return refuse(405, "the retention endpoint takes POST /query only")
    if not policy.authorised(request.headers.get("Authorization"), settings.retention_username,
                             settings.retention_password.get_secret_value()):
        log.warning("refused POST /query: wrong or missing retention credential")
        return refuse(401, "authorization failed: the retention endpoint's credential (HTTP Basic) is missing or "
                           "wrong")
    form = await request.post()
    text = request.query.get("q") if "q" in request.query else form.get("q")
    if "u" in request.query or "p" in request.query or "u" in form or "p" in form:
        return refuse(400, "credentials in the request (u, p) are refused: send them as HTTP Basic auth")
    if not isinstance(text, str):
        return refuse(400, "missing the statement: send it as the form field q")
    statement = retention.parse(text, settings.retention_max_hours)
    if isinstance(statement, policy.Refusal):
        log.warning("retention endpoint refused a statement: %s", statement.error)
        return refuse(statement.status, statement.error)
    try:
        if isinstance(statement, retention.Alter):
            status, body, _ = await _admin_query(request, "SHOW DATABASES")
            names = {row[0] for result in json.loads(body).get("results", []) for series in result.get("series", [])
                     for row in series.get("values", [])} if status == 200 else set()
            if status != 200:
                return refuse(502, f"InfluxDB answered SHOW DATABASES with {status}; nothing was altered")
            if statement.database not in names:
                return refuse(404, f"database {statement.database!r} does not exist; nothing was altered")
            log.info("retention endpoint: %s", statement.statement())
        status, body, content_type = await _admin_query(request, statement.statement())
    except (TimeoutError, aiohttp.ClientConnectionError) as exc:
        log.warning("InfluxDB did not answer the retention endpoint: %s", type(exc).__name__)
        return refuse(503, f"the gate could not reach InfluxDB ({type(exc).__name__}); nothing was done")
    return web.Response(status=status, body=body, headers={"Content-Type": content_type})


async def handle_write(request: web.Request) -> web.StreamResponse:
    """The write gate: the worker's credential, writes to the homes' databases and /ping only; with the
    retention endpoint on, also POST /query with the code location's credential (``handle_retention``)."""
    settings = request.app[SETTINGS_KEY]
    path = request.path
    if path == retention.QUERY_PATH and settings.retention_on:
        return await handle_retention(request)
    refused = policy.route(request.method, path)
    if refused is not None:
        log.warning("refused %s %s: %s", request.method, path, refused.status)
        return refuse(refused.status, refused.error)
    if path == policy.HEALTH_PATH:
        return web.Response(text="ok\n")
    if path == policy.PING_PATH:
        return await _forward(request, path, {}, None)
    if not policy.authorised(request.headers.get("Authorization"), settings.username,
                             settings.password.get_secret_value()):
        log.warning("refused %s %s: wrong or missing gate credential", request.method, path)
        return refuse(401, "authorization failed: the gate's credential (HTTP Basic) is missing or wrong")
    params, refused = policy.write_params(request.query)
    if refused is not None:
        log.warning("refused a write: %s", refused.error)
        return refuse(refused.status, refused.error)
    auth = aiohttp.BasicAuth(settings.upstream_username, settings.upstream_password.get_secret_value())
    return await _forward(request, path, params, auth)


async def handle_front(request: web.Request) -> web.StreamResponse:
    """The front: InfluxDB's own accounts, every path but /debug, credentials passed through for InfluxDB."""
    refused = policy.front_route(request.path)
    if refused is not None:
        log.warning("front refused %s %s: %s", request.method, request.path, refused.status)
        return refuse(refused.status, refused.error)
    authorization = request.headers.get("Authorization")
    return await _forward(request, request.path, request.query, None,
                          {"Authorization": authorization} if authorization else None)


def make_app(settings: GateSettings, handler: Handler = handle_write) -> web.Application:
    app = web.Application(client_max_size=0)
    app[SETTINGS_KEY] = settings

    async def upstream(app: web.Application) -> AsyncIterator[None]:
        connector: aiohttp.BaseConnector
        if settings.upstream_socket is not None:
            connector = aiohttp.UnixConnector(path=str(settings.upstream_socket), limit=UPSTREAM_CONNECTIONS)
        else:
            connector = aiohttp.TCPConnector(limit=UPSTREAM_CONNECTIONS, ssl=settings.upstream_ssl() or False)
        timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        async with aiohttp.ClientSession(base_url=settings.upstream_url, connector=connector, timeout=timeout,
                                         auto_decompress=False,
                                         skip_auto_headers=("User-Agent", "Accept-Encoding")) as session:
            app[UPSTREAM_KEY] = session
            yield

    app.cleanup_ctx.append(upstream)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def serve(settings: GateSettings, ssl_context: ssl.SSLContext | None = None) -> None:
    """Serve until SIGTERM/SIGINT. `ssl_context` (default: from the settings' certificate) makes both HTTPS."""
    context = ssl_context or settings.server_ssl()
    scheme = "https" if context else "http"
    listeners = [(handle_write, settings.host, settings.port, "write gate")]
    if settings.front_port is not None:
        listeners.append((handle_front, settings.front_host, settings.front_port, "front"))
    runners = []
    try:
        for handler, host, port, what in listeners:
            runner = web.AppRunner(make_app(settings, handler), auto_decompress=False, access_log=None)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, host, port, ssl_context=context).start()
            log.info("influx %s listening on %s://%s:%d, to InfluxDB at %s", what, scheme, host, port,
                     settings.upstream_socket or settings.upstream_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()
