"""Home Assistant's recorder database, opened for reading: a SQLite file, or a PostgreSQL or MySQL URL.

SQLite is opened read-only in place (`file:…?mode=ro`), not copied with the backup API: Home Assistant
keeps the file in WAL mode while it runs, and a WAL reader sees a consistent snapshot per statement
without blocking the writer, so the import can run beside a live Home Assistant; a copy would double the
disk (a recorder is often gigabytes) and the time before the first row. Each page is its own short read,
so the import never holds a snapshot that keeps HA's WAL from checkpointing. Before anything is written the
file is checked (`PRAGMA quick_check`): a corrupted recorder is refused whole, not half imported.

Only schema 38 and later is read (Home Assistant 2023.4+: `states.metadata_id → states_meta.entity_id`,
float epoch `last_updated_ts`); an older one is refused naming the version found.

`Recorder.query` runs SQL with named parameters written `:name` on whichever database it is (sqlite3
binds them natively; psycopg and PyMySQL get `%(name)s`) and `Recorder.qmark` the same with positional
`?` ones, so the states and statistics readers share one connection and one SQL text per query.
`source_key` names the recorder, not the path: the first `schema_changes`
row (written when Home Assistant created the database, never purged) — a copy of the file, or the same
database reached by another path, resumes the same `ops.import_progress`.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3
import urllib.parse
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg

MIN_SCHEMA_VERSION = 38  # Home Assistant 2023.4: states_meta and float epoch timestamps
SQLITE = "sqlite"
POSTGRESQL = "postgresql"
MYSQL = "mysql"
POSTGRESQL_SCHEMES = ("postgresql", "postgres")
MYSQL_SCHEMES = ("mysql", "mariadb")
MYSQL_DEFAULT_PORT = 3306
PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
KEY_CHARS = 24

Rows = list[tuple[Any, ...]]


class RecorderError(Exception):
    """The recorder cannot be read as given; the message says what was found and what to do."""


class _Connection(Protocol):
    def close(self) -> None: ...


def to_pyformat(sql: str) -> str:
    """`:name` parameters as `%(name)s` (psycopg, PyMySQL), literal `%` doubled; `::` casts untouched."""
    return PARAMETER.sub(r"%(\1)s", sql.replace("%", "%%"))


def redact(location: str) -> str:
    """The location without its password, for logs and `ops.imports.source`."""
    parts = urllib.parse.urlsplit(location)
    if not parts.scheme or parts.password is None:
        return location
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def _scheme(location: str) -> str:
    """The URL scheme without a SQLAlchemy driver suffix (`mysql+pymysql` → `mysql`); '' for a path."""
    head, sep, _ = location.partition("://")
    return head.split("+", 1)[0].lower() if sep else ""


class Recorder:
    """One open recorder connection; `query` from one thread at a time (`fetch` runs it on its own)."""

    def __init__(self, kind: str, source: str, conn: _Connection) -> None:
        self.kind = kind
        self.source = source  # what to show: a path, or a URL without its password
        self._conn = conn
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder")
        self.schema_version = 0
        self.source_key = ""

    def query(self, sql: str, params: Mapping[str, object] | None = None) -> Rows:
        """Every row of `sql` (named `:parameters`); the caller bounds it (LIMIT) — pages, not tables."""
        args = dict(params or {})
        if self.kind == SQLITE:
            assert isinstance(self._conn, sqlite3.Connection)
            return self._conn.execute(sql, args).fetchall()
        text = to_pyformat(sql)
        cursor: Any = self._conn.cursor()  # type: ignore[attr-defined]
        try:
            cursor.execute(text, args)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def qmark(self, sql: str, args: Sequence[object] = ()) -> Rows:
        """`query` for SQL with positional `?` parameters (the statistics reader's `Fetch`)."""
        names = iter(range(len(args)))
        named = re.sub(r"\?", lambda _match: f":p{next(names)}", sql)
        return self.query(named, {f"p{i}": value for i, value in enumerate(args)})

    async def fetch(self, sql: str, params: Mapping[str, object] | None = None) -> Rows:
        """`query` on the recorder's own thread, so the event loop (InfluxDB writes) runs meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.query, sql, params)

    def columns(self, table: str) -> set[str]:
        """The table's column names (schema versions add columns, e.g. `last_reported_ts` in 43)."""
        if self.kind == SQLITE:
            return {str(row[1]) for row in self.query(f"PRAGMA table_info({table})")}
        rows = self.query("SELECT column_name FROM information_schema.columns WHERE table_name = :table"
                          + (" AND table_schema = current_schema()" if self.kind == POSTGRESQL
                             else " AND table_schema = DATABASE()"), {"table": table})
        return {str(row[0]).lower() for row in rows}

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._conn.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _identify(self) -> None:
        """Schema version (refused below `MIN_SCHEMA_VERSION`) and `source_key`."""
        try:
            newest = self.query("SELECT schema_version FROM schema_changes ORDER BY change_id DESC LIMIT 1")
            first = self.query("SELECT schema_version, changed FROM schema_changes ORDER BY change_id LIMIT 1")
        except (sqlite3.Error, psycopg.Error, _mysql_error()) as exc:
            raise RecorderError(f"{self.source} has no readable schema_changes table, so it is not a Home "
                                f"Assistant recorder database ({type(exc).__name__}: {str(exc)[:200]})") from None
        if not newest or not first:
            raise RecorderError(f"{self.source}: schema_changes is empty; is this a Home Assistant recorder?")
        self.schema_version = int(newest[0][0])
        if self.schema_version < MIN_SCHEMA_VERSION:
            raise RecorderError(
                f"{self.source} has recorder schema version {self.schema_version}; hats import reads version "
                f"{MIN_SCHEMA_VERSION} or later (Home Assistant 2023.4+). Start a newer Home Assistant on it once "
                "(it migrates the database), then import again")
        self.source_key = source_key_of(int(first[0][0]), first[0][1])


def source_key_of(first_version: int, changed: object) -> str:
    """A stable name for a recorder from its first `schema_changes` row, whatever the database returns."""
    if isinstance(changed, datetime):
        moment = changed if changed.tzinfo is not None else changed.replace(tzinfo=UTC)
    else:
        moment = datetime.fromisoformat(str(changed))
        moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    text = f"{first_version}|{moment.astimezone(UTC).isoformat(timespec='microseconds')}"
    return "recorder-" + hashlib.sha256(text.encode()).hexdigest()[:KEY_CHARS]


def _mysql_error() -> type[Exception]:
    import pymysql

    error: type[Exception] = pymysql.err.Error
    return error


def open_recorder(location: str) -> Recorder:
    """Open and identify the recorder at `location` (a path, `sqlite:////path`, or a database URL)."""
    scheme = _scheme(location)
    if scheme in POSTGRESQL_SCHEMES:
        recorder = _open_postgresql(location)
    elif scheme in MYSQL_SCHEMES:
        recorder = _open_mysql(location)
    elif scheme in ("", SQLITE):
        path = Path(location.split("://", 1)[1][1:] if scheme else location)
        recorder = _open_sqlite(path)
    else:
        raise RecorderError(f"cannot read a recorder at {redact(location)!r}: give a SQLite file "
                            "(home-assistant_v2.db), a postgresql:// URL, a mysql:// URL or a running Home "
                            "Assistant's address (http://host:8123)")
    try:
        recorder._identify()
    except BaseException:
        recorder.close()
        raise
    return recorder


def _open_sqlite(path: Path) -> Recorder:
    if not path.is_file():
        raise RecorderError(f"{path}: no such file (Home Assistant keeps it as <config>/home-assistant_v2.db)")
    resolved = path.resolve()
    uri = f"file:{urllib.parse.quote(str(resolved))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.Error as exc:
        raise RecorderError(f"{resolved} is not a readable SQLite database, or is corrupted ({exc}); nothing was "
                            "imported. Import a backup, or the file HA renamed when it found it corrupted") from None
    if problems != ["ok"]:
        conn.close()
        raise RecorderError(f"{resolved} is corrupted (SQLite quick_check: {'; '.join(problems[:3])[:300]}); "
                            "nothing was imported. Import a backup, or the file HA renamed when it found it corrupted")
    return Recorder(SQLITE, str(resolved), conn)


def _open_postgresql(location: str) -> Recorder:
    url = "postgresql://" + location.split("://", 1)[1]
    try:
        conn = psycopg.connect(url, autocommit=True)
        conn.execute("SET default_transaction_read_only = on")
    except psycopg.Error as exc:
        raise RecorderError(f"cannot connect to the recorder {redact(location)}: {str(exc).strip()[:300]}") from None
    return Recorder(POSTGRESQL, redact(location), conn)


def _open_mysql(location: str) -> Recorder:
    import pymysql

    parts = urllib.parse.urlsplit(location)
    options = dict(urllib.parse.parse_qsl(parts.query))
    try:
        conn = pymysql.connect(
            host=parts.hostname or "localhost", port=parts.port or MYSQL_DEFAULT_PORT,
            user=urllib.parse.unquote(parts.username or ""), password=urllib.parse.unquote(parts.password or ""),
            database=parts.path.lstrip("/") or None, charset=options.get("charset", "utf8mb4"),
            unix_socket=options.get("unix_socket"), autocommit=True)
    except pymysql.err.Error as exc:
        raise RecorderError(f"cannot connect to the recorder {redact(location)}: {exc}") from None
    return Recorder(MYSQL, redact(location), conn)


def placeholders(name: str, values: Sequence[object]) -> tuple[str, dict[str, object]]:
    """`IN (…)` for `values`: the SQL list and its named parameters (`:name0, :name1, …`)."""
    params = {f"{name}{i}": value for i, value in enumerate(values)}
    return ", ".join(f":{key}" for key in params), params
