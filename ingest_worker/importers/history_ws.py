"""`hats import http://host:8123`: a running Home Assistant's recorded states over its WebSocket API,
without its database file — through the door, resumable, like the recorder file's (`states.py`).

The location is Home Assistant's address (`http(s)://host:8123`, or `ws(s)://host:8123/api/websocket`);
the token is the worker's `HATS_HA_TOKEN` setting, never an argument (a command line is visible to
every user of the machine). A refused token is a settings error naming it, raised before anything is
written; HA is never asked twice with it (its `ip_ban_enabled` bans an address that keeps trying).

Which entities: HA's history API answers only for the ids it is asked about, so the import asks for every
id HA still names — its current states (`get_states`), its entity registry (disabled entities keep their
history) and its statistics (`recorder/list_statistic_ids`: an entity removed since still has them). An
entity HA names nowhere any more (a state once set over REST, then a restart) is only in the file.

What is asked: `history/history_during_period` as the live link's gap fill asks it (`ha_history.py`):
every change with its full attributes, so unit and device_class come with each row exactly as from the
file and the point lands in the same series. Windows start `HISTORY_WINDOW_S` long and adapt to the
home: doubled (up to `WINDOW_MAX_S`) after a window of fewer than a quarter of a page of rows, halved
(down to `WINDOW_MIN_S`) after one of more than a page, so neither a quiet home's year nor a busy
home's hour becomes one giant answer. Only the raw retention (`core.tenants.raw_days`) is read, as
from the file.

Position: the window's rows are sorted by (last_updated, entity) and pushed through the door in pages of
`HATS_BATCH_MAX_POINTS` rows; each page's newest last_updated is committed to `ops.import_progress`
(stream `states`) in the page's flush, and a page never ends inside one instant, so the next read starts
strictly after it (HA's window is `start < last_updated`): a killed run continues after its last
committed page, a second run reads nothing. A window is read whole before its rows are pushed: its
chunks of entity ids must all be in hand to order the rows.

Windows HA does not search: a call whose `end_time` is before HA's oldest recorder run (2024.3: a run
purged while the states recorded during it are still kept) or oldest state (2025.4), or one for
entities of which none changed since the start, is answered `{}` without looking; a search names every
id the recorder knows, with its rows or none. A window for which every chunk got `{}` is therefore not
passed but read again from the same start, twice as long, until HA searches it (or it reaches the
present): otherwise 2024.3 would hide the states between its purge horizon and its oldest run's start.

The present: windows that ended `SETTLED_S` ago are complete in the recorder. The newest window is read up
to HA's own present (no end: HA's clock, not ours) and positioned at the newest change N it returned.
HA keeps recording while the chunks are read one after another, so a chunk read before the one that
showed N may lack changes up to N; each such chunk is read again from its own newest change (the
recorder writes in order: everything up to that was committed when the chunk was read) to N. What is
newer than N is the next run's.

Identity (`source_key`): HA's API exposes no instance id (`/api/discovery_info` is gone in 2024.3,
onboarding's views in 2025.4 once onboarded), so the key is the id of HA's owner (`config/auth/list`,
created at onboarding, never deleted: the same whatever address or token reaches it). A non-administrator's
token may not list users: its own user's id (`auth/current_user`) is the key, so the same user's tokens
resume each other. A recorder file and the live API of the same home have different keys.
"""

from __future__ import annotations

import functools
import hashlib
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import aiohttp
import psycopg

from ingest_worker.door import Door, offline_item
from ingest_worker.ha_client import ConnectionLost, HaClient, HaLinkSettings, HomeAssistantAuthError
from ingest_worker.ha_history import (
    HISTORY_IDS_PER_CALL,
    HISTORY_WINDOW_S,
    HistoryItem,
    history_items,
    request,
    valid_ids,
)
from ingest_worker.importers.home_config import import_time_zone
from ingest_worker.importers.recorder_db import RecorderError
from ingest_worker.importers.states import STREAM, StatesProgress, StatesReport, retention_cutoff, start_after
from ingest_worker.settings import ConfigError
from ingest_worker.sources.base import Source
from ingest_worker.sources.websocket import WebsocketSource, epoch_to_us
from ingest_worker.store import import_progress
from ingest_worker.store.import_progress import Position

if TYPE_CHECKING:
    from ingest_worker.importers.statistics import StatisticsReader

KIND = "websocket"  # ops.imports.source_kind
SCHEMES = ("http", "https", "ws", "wss")
WEBSOCKET_PATH = "/api/websocket"
TOKEN_SETTING = "HATS_HA_TOKEN"  # noqa: S105 (the setting's name, not a secret)
# A window that ended this long ago is complete in HA's recorder (its commit interval and backlog are
# seconds; the live link waits at most as long for it).
SETTLED_S = 600.0
WINDOW_MIN_S, WINDOW_MAX_S = 1, 86_400
US_PER_S = 1_000_000
KEY_CHARS = 24
# Where HA names its entities: (command, the field with the id).
ENTITY_LISTS = (("get_states", "entity_id"), ("config/entity_registry/list", "entity_id"),
                ("recorder/list_statistic_ids", "statistic_id"))


def is_home_assistant(location: str) -> bool:
    """Whether `hats import` reads `location` over Home Assistant's API (else: a recorder database)."""
    head, sep, _ = location.partition("://")
    return bool(sep) and head.lower() in SCHEMES


def base_url(location: str) -> str:
    """HA's base URL from the location: no credentials, query or `/api/websocket` (ops.imports.source)."""
    parts = urllib.parse.urlsplit(location)
    if parts.scheme.lower() not in SCHEMES or not parts.hostname:
        raise RecorderError(f"{location!r} is not a Home Assistant address: give http://host:8123 (or "
                            "ws://host:8123/api/websocket)")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host + (f":{parts.port}" if parts.port else "")
    path = parts.path.rstrip("/").removesuffix(WEBSOCKET_PATH).rstrip("/")
    return urllib.parse.urlunsplit((parts.scheme.lower(), netloc, path, "", ""))


def source_key_of(kind: str, user_id: str) -> str:
    return "websocket-" + hashlib.sha256(f"{kind}|{user_id}".encode()).hexdigest()[:KEY_CHARS]


async def instance_key(ha: HaClient) -> str:
    """The `source_key` of the Home Assistant `ha` reaches: its owner's id, else the token's user's."""
    try:
        users = await ha.result({"type": "config/auth/list"})
    except ConnectionLost:
        users = None  # not an administrator's token (if the connection is gone, the next call says so)
    owner = next((u["id"] for u in users if isinstance(u, dict) and u.get("is_owner") and isinstance(u.get("id"), str)),
                 None) if isinstance(users, list) else None
    if owner is not None:
        return source_key_of("owner", owner)
    me = await ha.result({"type": "auth/current_user"})
    if not isinstance(me, dict) or not isinstance(me.get("id"), str):
        raise ConnectionLost(f"auth/current_user answered {str(me)[:200]}")
    return source_key_of("user", me["id"])


async def entity_ids(ha: HaClient) -> list[str]:
    """Every entity id HA names (states, registry, statistics) that its history API accepts."""
    found: list[str] = []
    for command, field in ENTITY_LISTS:
        result = await ha.result({"type": command})
        if not isinstance(result, list):
            raise ConnectionLost(f"{command} answered {str(result)[:200]}")
        found += [entry[field] for entry in result if isinstance(entry, dict) and isinstance(entry.get(field), str)]
    return valid_ids(found)


def next_window(window_us: int, rows: int, page_rows: int) -> int:
    """The next window's length after one of `rows` rows."""
    if rows > page_rows:
        return max(WINDOW_MIN_S * US_PER_S, window_us // 2)
    if rows * 4 < page_rows:
        return min(WINDOW_MAX_S * US_PER_S, window_us * 2)
    return window_us


def pages(items: Sequence[HistoryItem], page_rows: int, after_us: int) -> Iterator[tuple[list[HistoryItem], int]]:
    """A window's items in (last_updated, entity) order, in pages of at least `page_rows` (the last may be
    smaller), each with the µs up to which it completes the window: a page ends only between two
    instants. Items without a time (junk the source dead-letters) come first, at `after_us`."""
    ordered = sorted(items, key=lambda item: (-1 if item.stamp_us is None else item.stamp_us, item.topic))
    page: list[HistoryItem] = []
    position = after_us
    for index, item in enumerate(ordered):
        page.append(item)
        if item.stamp_us is not None:
            position = item.stamp_us
        following = ordered[index + 1].stamp_us if index + 1 < len(ordered) else None
        if len(page) >= page_rows and following != item.stamp_us:
            yield page, position
            page = []
    if page:
        yield page, position


async def _chunk(ha: HaClient, ids: Sequence[str], after_us: int,
                 through_us: int | None) -> tuple[list[HistoryItem], bool]:
    """The changes of `ids` after `after_us`, up to and including `through_us` (None: HA's present), and
    whether HA searched (it answers `{}` without searching; else it names every id its recorder knows)."""
    end_us = None if through_us is None else through_us + 1
    result = await ha.result(request(ids, after_us, end_us, include_start_time_state=False))
    return list(history_items(result, after_us)), bool(result)


def _chunks(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[offset:offset + HISTORY_IDS_PER_CALL] for offset in range(0, len(ids), HISTORY_IDS_PER_CALL)]


def _newest(items: Sequence[HistoryItem]) -> int | None:
    return max((item.stamp_us for item in items if item.stamp_us is not None), default=None)


async def read_window(ha: HaClient, ids: Sequence[str], after_us: int,
                      through_us: int) -> tuple[list[HistoryItem], bool]:
    """A settled window: every change after `after_us` up to and including `through_us`, and whether HA
    searched it (see the module's docstring, "Windows HA does not search")."""
    found: list[HistoryItem] = []
    searched = False
    for chunk in _chunks(ids):
        items, answered = await _chunk(ha, chunk, after_us, through_us)
        found += items
        searched = searched or answered
    return found, searched


async def read_to_present(ha: HaClient, ids: Sequence[str], after_us: int) -> tuple[list[HistoryItem], int]:
    """Every change after `after_us` up to the newest one HA returned, and that newest one's µs
    (`after_us` when there is none); see the module's docstring, "The present"."""
    chunks = _chunks(ids)
    found = [(await _chunk(ha, chunk, after_us, None))[0] for chunk in chunks]
    newest = [_newest(items) for items in found]
    top = max((stamp for stamp in newest if stamp is not None), default=None)
    if top is None:
        return [item for items in found for item in items], after_us
    for index in range(newest.index(top)):
        own = newest[index]
        found[index] += (await _chunk(ha, chunks[index], after_us if own is None else own, top))[0]
    return [item for items in found for item in items], top


class LiveHistory:
    """A running Home Assistant, authenticated and identified, as `hats import` reads it."""

    kind = KIND

    def __init__(self, ha: HaClient, source: str, source_key: str) -> None:
        self._ha = ha
        self.source = source
        self.source_key = source_key

    @property
    def headline(self) -> str:
        return f"Home Assistant {self._ha.ha_version} at {self.source} ({self.source_key})"

    def door_source(self) -> Source:
        return WebsocketSource()

    async def import_home(self, conn: psycopg.AsyncConnection[tuple[object, ...]], tenant: str) -> None:
        """The home's time zone into core.tenants (never over an operator's)."""
        await import_time_zone(self._ha, conn, tenant)

    def statistics(self) -> StatisticsReader:
        # Imported here: the statistics import is its own module, loaded only by runs that use it.
        from ingest_worker.importers.statistics_ws import WebsocketStatistics

        return WebsocketStatistics(self._ha)

    async def import_states(self, door: Door, progress: StatesProgress, raw_days: int, page_rows: int,
                            report: StatesReport, tick: Callable[[StatesReport], None],
                            stop: Callable[[], bool] = lambda: False) -> StatesReport:
        """Every change after the committed position (and inside retention) into the door, page by page."""
        committed = await import_progress.load(door.conn, door.settings.tenant, self.source_key, STREAM)
        after_us = first_us = epoch_to_us(start_after(committed, retention_cutoff(raw_days)).last_ts)
        ids = await entity_ids(self._ha)
        window_us = HISTORY_WINDOW_S * US_PER_S
        while not stop():
            end_us = after_us + window_us
            final = end_us > (time.time() - SETTLED_S) * US_PER_S
            if final:
                items, end_us = await read_to_present(self._ha, ids, after_us)
            else:
                items, searched = await read_window(self._ha, ids, after_us, end_us)
                if not searched:  # nothing read: the same start, a longer window
                    window_us *= 2
                    continue
            for page, position_us in pages(items, page_rows, after_us):
                if stop():
                    break
                await self._push(door, progress, page, position_us, report)
                _estimate(report, first_us, position_us)
                tick(report)
            if final or stop():
                break
            after_us, window_us = end_us, next_window(window_us, len(items), page_rows)
        if not stop():
            report.total = report.rows_read
            tick(report)
        report.counters = {**door.counters, "would_write": door.would_write}
        return report

    @staticmethod
    async def _push(door: Door, progress: StatesProgress, page: list[HistoryItem], position_us: int,
                    report: StatesReport) -> None:
        received_ns = time.time_ns()
        stamps = [item.stamp_us for item in page if item.stamp_us is not None]
        mark = functools.partial(progress.advance, Position(position_us / US_PER_S, 0), len(page))
        await door.push([offline_item(item.topic, item.payload, received_ns) for item in page], marked=mark)
        report.rows_read += len(page)
        if stamps:
            report.saw(min(stamps) / US_PER_S, max(stamps) / US_PER_S)

    async def aclose(self) -> None:
        await self._ha.__aexit__(None, None, None)


def _estimate(report: StatesReport, first_us: int, position_us: int) -> None:
    """`report.total` from the share of the time read so far (HA does not count rows for us)."""
    span = max(time.time() * US_PER_S - first_us, 1.0)
    done = max(position_us - first_us, 1)
    report.total = max(report.rows_read, round(report.rows_read * span / done))


async def open_live(location: str, token: str) -> LiveHistory:
    """Connect, authenticate and identify; nothing is written before this returns."""
    source = base_url(location)
    if not token:
        raise ConfigError(f"{TOKEN_SETTING} is not set: importing from Home Assistant at {source} needs a "
                          "long-lived access token (HA: your profile → Security → Long-lived access tokens)")
    ha = HaClient(HaLinkSettings(source, token))
    try:
        await ha.__aenter__()
    except HomeAssistantAuthError as exc:
        raise ConfigError(str(exc)) from None
    except (aiohttp.ClientError, OSError, TimeoutError, ConnectionLost) as exc:
        raise RecorderError(f"cannot reach Home Assistant at {source} ({type(exc).__name__}: {str(exc)[:300]}); "
                            "check the address and that Home Assistant is running; nothing was imported") from None
    try:
        return LiveHistory(ha, source, await instance_key(ha))
    except BaseException:
        await ha.__aexit__(None, None, None)
        raise
