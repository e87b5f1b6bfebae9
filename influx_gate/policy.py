"""What the gate lets through, as pure functions: a request is a write to a home's database or a ping, or it
is refused with a message that says why (the worker logs it, an operator reads it). The front (InfluxDB's own
accounts) lets everything through but InfluxDB's unauthenticated /debug endpoints."""

from __future__ import annotations

import base64
import binascii
import hmac
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from ingest_worker.contract import RAW_RP, ROLLUP_RP, is_tenant_database

WRITE_PATH = "/write"
PING_PATH = "/ping"
HEALTH_PATH = "/healthz"
# `raw` for the worker's points, `rollup` for the statistics import (`hats import`); never `autogen`.
WRITABLE_POLICIES = frozenset({RAW_RP, ROLLUP_RP})
# InfluxDB 1.x's /write precisions.
PRECISIONS = frozenset({"n", "ns", "u", "ms", "s", "m", "h"})
# InfluxDB 1.6 serves /debug/vars and /debug/requests to anyone, auth on or not, and has no option to stop it.
DEBUG_PREFIX = "/debug"
# The only query parameters forwarded: InfluxDB reads credentials from `u`/`p` too, and the gate sets its own.
FORWARDED_PARAMS = ("db", "rp", "precision")


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    error: str


def credentials(authorization: str | None) -> tuple[str, str] | None:
    """The (user, password) of an HTTP Basic `Authorization` header, or None."""
    if not authorization or not authorization.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(authorization[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def authorised(authorization: str | None, username: str, password: str) -> bool:
    """Whether the header carries the gate's credential (compared in constant time)."""
    given = credentials(authorization)
    if given is None:
        return False
    user_ok = hmac.compare_digest(given[0].encode(), username.encode())
    password_ok = hmac.compare_digest(given[1].encode(), password.encode())
    return user_ok and password_ok


def route(method: str, path: str) -> Refusal | None:
    """None when (method, path) is one the gate serves; else why not."""
    if path == WRITE_PATH:
        return None if method == "POST" else Refusal(405, "the gate takes POST /write only")
    if path in (PING_PATH, HEALTH_PATH):
        return None if method in ("GET", "HEAD") else Refusal(405, f"the gate takes GET or HEAD {path} only")
    return Refusal(403, f"{method} {path} is refused: this is the write-only gate in front of InfluxDB; it forwards "
                        "POST /write to a home's database and /ping, nothing else (queries, statements and "
                        "/debug are for the accounts that reach InfluxDB directly)")


def write_params(query: Mapping[str, str]) -> tuple[dict[str, str], Refusal | None]:
    """The parameters to forward for a /write, or why the write is refused."""
    if "u" in query or "p" in query:
        return {}, Refusal(400, "credentials in the URL (u, p) are refused: send them as HTTP Basic auth")
    database = query.get("db", "")
    if not is_tenant_database(database):
        return {}, Refusal(403, f"db={database!r} is refused: the gate writes only to a home's database "
                                "(hats_<tenant>)")
    policy = query.get("rp", RAW_RP)
    if policy not in WRITABLE_POLICIES:
        return {}, Refusal(403, f"rp={policy!r} is refused: the gate writes only to retention policies "
                                f"{', '.join(sorted(WRITABLE_POLICIES))}")
    precision = query.get("precision", "ns")
    if precision not in PRECISIONS:
        return {}, Refusal(400, f"precision={precision!r} is invalid: use one of {', '.join(sorted(PRECISIONS))}")
    return {"db": database, "rp": policy, "precision": precision}, None


def front_route(path: str) -> Refusal | None:
    """None when the front forwards `path` (decoded, as it will be forwarded); else why not."""
    if posixpath.normpath(path) != path and path != "/":
        return Refusal(400, f"{path!r} is refused: send a canonical path (no '.', '..' or '//' segments)")
    if path == DEBUG_PREFIX or path.startswith(DEBUG_PREFIX + "/"):
        return Refusal(403, f"{path} is refused: InfluxDB's /debug endpoints answer without credentials, so the "
                            "front does not forward them")
    return None
