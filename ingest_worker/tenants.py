"""The homes a registry-mode worker serves: the active rows of `core.tenants` in its shard, followed live.

Migration 0011 announces every change of a row on `NOTIFY hats_tenants`; `TenantWatcher` listens on a
connection of its own and wakes the worker, which re-reads the rows and starts, restarts or stops the
homes that changed — no restart of the process. It also re-reads every `HATS_TENANT_REREAD_S`
(`tenant_reread_s`): a notification sent while PostgreSQL (or the listening connection) was away is
never delivered, and the periodic read is what makes a missed one cost a delay, not a home.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import psycopg

from ingest_worker.contract import shard_of

log = logging.getLogger(__name__)

CHANNEL = "hats_tenants"
LISTEN_RETRY_INITIAL_S = 0.5
LISTEN_RETRY_MAX_S = 30.0
BROKER_PASSWORD = "broker_password"  # noqa: S105 (the file <HATS_TENANT_SECRETS_DIR>/<tenant>/broker_password)
HA_TOKEN = "ha_token"  # noqa: S105 (a file name, not a secret)

SELECT_ACTIVE = """
    SELECT tenant_id::text, topic_prefix, broker_url, broker_username, ha_url, series_budget
      FROM core.tenants
     WHERE status = 'active'
       AND (topic_prefix IS NOT NULL OR broker_url IS NOT NULL OR ha_url IS NOT NULL)  -- else nothing to read
     ORDER BY tenant_id"""


@dataclass(frozen=True, slots=True)
class TenantRow:
    """What the worker needs of a home; a change of any field restarts the home's pipeline."""

    tenant_id: str
    topic_prefix: str | None
    broker_url: str | None
    broker_username: str | None
    ha_url: str | None
    series_budget: int

    @property
    def on_platform_broker(self) -> bool:
        return self.topic_prefix is not None and self.broker_url is None


async def active_tenants(conn: psycopg.AsyncConnection[tuple[object, ...]], shard: int, shards: int
                         ) -> dict[str, TenantRow]:
    """The active homes of shard `shard` of `shards`."""
    cur = await conn.execute(SELECT_ACTIVE)
    rows = [TenantRow(str(r[0]), _opt(r[1]), _opt(r[2]), _opt(r[3]), _opt(r[4]), int(str(r[5])))
            for r in await cur.fetchall()]
    return {row.tenant_id: row for row in rows if shard_of(row.tenant_id, shards) == shard}


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def read_secret(secrets_dir: Path, tenant_id: str, name: str) -> str:
    """One secret of a home, `<dir>/<tenant>/<name>` (as `hats tenant` writes them) or `<dir>/<tenant>.<name>`
    (a Kubernetes Secret mounted whole: its keys are files, and a key added later appears in the running pod
    without a rollout, which a Secret volume mapping keys into folders cannot do); a missing one is an error
    naming the file to create (never its content)."""
    path = secrets_dir / tenant_id / name
    flat = secrets_dir / f"{tenant_id}.{name}"
    try:
        value = (path if path.exists() or not flat.exists() else flat).read_text().strip()
    except FileNotFoundError:
        raise TenantConfigError(f"tenant {tenant_id}: {path} (or {flat.name}) is missing (HATS_TENANT_SECRETS_DIR); "
                                "write the secret there (mode 0600) and the worker starts the home") from None
    if not value:
        raise TenantConfigError(f"tenant {tenant_id}: {path} is empty")
    return value


class TenantConfigError(Exception):
    """A home cannot be served as configured (the message says what to fix); the others are unaffected."""


class TenantWatcher:
    """`changed` is set on every NOTIFY hats_tenants and after every (re)connection of the listener."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self.changed = asyncio.Event()
        self.listening = False

    async def run(self) -> None:
        delay = LISTEN_RETRY_INITIAL_S
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._dsn, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening = True
                    self.changed.set()  # what changed while nobody listened is read again now
                    delay = LISTEN_RETRY_INITIAL_S
                    async for notice in conn.notifies():
                        log.debug("tenant %s changed (NOTIFY %s)", notice.payload, CHANNEL)
                        self.changed.set()
            except psycopg.OperationalError as exc:
                log.warning("LISTEN %s lost (%s); retrying in %.1f s", CHANNEL, str(exc).strip()[:200], delay)
            finally:
                self.listening = False
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 (jitter)
            delay = min(delay * 2, LISTEN_RETRY_MAX_S)

    async def wait(self, timeout_s: float) -> None:
        """Until a change is announced or `timeout_s` passed (the periodic re-read)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout_s)
        self.changed.clear()
