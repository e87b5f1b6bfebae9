"""How much of InfluxDB's disk a home's day takes: ``SHOW SHARDS`` (which shard holds which time range of
which database and retention policy) and ``SHOW STATS FOR 'shard'`` (each open shard's ``diskBytes``).

The storage of a UTC day, per retention policy: for every shard of the home's database in that policy
whose time range overlaps the day, its ``diskBytes`` times the share of the shard's range the day covers.
Raw shards are one day long (InfluxDB's shard group for a policy of 2 days to 6 months), so a raw day is
its shard's size; a rollup shard spans 7 days, so a day is a seventh of it — and the days of a shard add
up to its size, never counting it twice. Measured when the asset runs: a day still being written grows,
and one past its policy's retention is 0. A shard InfluxDB reports no statistics for (not opened since it
started) is listed as unmeasured and counts 0. Pure, so it is tested without InfluxDB.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Shard:
    shard_id: str
    database: str
    rp: str
    start: datetime
    end: datetime


def shards_of(show_shards: Iterable[Mapping[str, Any]]) -> list[Shard]:
    """``SHOW SHARDS``' series (one per database) as shards."""
    out = []
    for series in show_shards:
        for row in series.get("values") or []:
            got = dict(zip(series["columns"], row, strict=True))
            out.append(Shard(str(got["id"]), str(got["database"]), str(got["retention_policy"]),
                             datetime.fromisoformat(str(got["start_time"])),
                             datetime.fromisoformat(str(got["end_time"]))))
    return out


def disk_bytes(show_stats: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """``SHOW STATS FOR 'shard'``' series as shard id → diskBytes."""
    out = {}
    for series in show_stats:
        [row] = series["values"]
        out[str(series["tags"]["id"])] = int(dict(zip(series["columns"], row, strict=True))["diskBytes"])
    return out


def day_bytes(shards: Iterable[Shard], sizes: Mapping[str, int], database: str, rp: str, start: datetime,
              end: datetime) -> tuple[int, list[str]]:
    """Bytes of ``[start, end)`` in ``database.rp`` (module docstring) and the overlapping shards unmeasured."""
    total = 0.0
    unmeasured = []
    for shard in shards:
        if shard.database != database or shard.rp != rp or shard.end <= start or shard.start >= end:
            continue
        if shard.shard_id not in sizes:
            unmeasured.append(shard.shard_id)
            continue
        share = (min(end, shard.end) - max(start, shard.start)) / (shard.end - shard.start)
        total += sizes[shard.shard_id] * share
    return round(total), unmeasured
