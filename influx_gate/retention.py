"""What the gate's retention endpoint lets the Dagster code location do, as pure functions.

InfluxDB 1.x lets only an admin `ALTER RETENTION POLICY` or list shards, and the code location needs both
(retention sets a home's durations, billing measures its shards). Holding the admin credential there would
let a leaked code location drop every database, so the gate holds it and takes from the code location, with
its own credential, exactly these statements, each one alone in its request:

- ``ALTER RETENTION POLICY "raw"|"rollup" ON "hats_<tenant>" DURATION <n>h``, n within [1, max_hours] (the
  database must exist: the server checks it with ``SHOW DATABASES`` before it forwards);
- ``SHOW SHARDS`` and ``SHOW STATS FOR 'shard'`` (read-only: which shard holds which home's days, and their
  sizes).

Everything else is refused with a message saying why. Reading a home's policies needs no admin: the code
location's own InfluxDB account (ALL on the homes' databases) runs ``SHOW RETENTION POLICIES`` itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from influx_gate.policy import WRITABLE_POLICIES, Refusal
from ingest_worker.contract import is_tenant_database

QUERY_PATH = "/query"
MIN_HOURS = 1
READS = frozenset({"SHOW SHARDS", "SHOW STATS FOR 'shard'"})
_ALTER = re.compile(r'ALTER RETENTION POLICY "(?P<rp>[^"\\]*)" ON "(?P<db>[^"\\]*)" DURATION (?P<duration>\S+)')
_HOURS = re.compile(r"(?P<hours>[0-9]{1,9})h")


@dataclass(frozen=True, slots=True)
class Alter:
    """One allowed ALTER: the database it names must still be checked to exist."""

    database: str
    policy: str
    hours: int

    def statement(self) -> str:
        """The statement forwarded to InfluxDB: rebuilt from the parsed parts, never the client's text."""
        return f'ALTER RETENTION POLICY "{self.policy}" ON "{self.database}" DURATION {self.hours}h'


@dataclass(frozen=True, slots=True)
class Read:
    text: str

    def statement(self) -> str:
        return self.text


Statement = Alter | Read


def parse(text: str, max_hours: int) -> Statement | Refusal:
    """The allowed statement ``text`` is, or why it is refused."""
    statement = text.strip()
    if statement in READS:
        return Read(statement)
    match = _ALTER.fullmatch(statement)
    if match is None:
        return Refusal(403, f"{_shown(statement)!r} is refused: the retention endpoint takes only "
                            'ALTER RETENTION POLICY "raw"|"rollup" ON "hats_<tenant>" DURATION <n>h, '
                            f"{' and '.join(sorted(READS))}, one statement a request")
    database, rp, duration = match["db"], match["rp"], match["duration"]
    if not is_tenant_database(database):
        return Refusal(403, f"database {database!r} is refused: only a home's database (hats_<tenant>)")
    if rp not in WRITABLE_POLICIES:
        return Refusal(403, f"retention policy {rp!r} is refused: only {', '.join(sorted(WRITABLE_POLICIES))}")
    hours = _HOURS.fullmatch(duration)
    if hours is None:
        return Refusal(400, f"DURATION {duration[:40]!r} is refused: give whole hours, e.g. 720h")
    if not MIN_HOURS <= int(hours["hours"]) <= max_hours:
        return Refusal(403, f"DURATION {duration} is refused: it must be within [{MIN_HOURS}h, {max_hours}h] "
                            "(HATS_INFLUX_GATE_RETENTION_MAX_HOURS)")
    return Alter(database, rp, int(hours["hours"]))


def _shown(statement: str) -> str:
    """A refused statement as the refusal quotes it: its start only (a statement may carry a password)."""
    return statement.split("'")[0][:80]
