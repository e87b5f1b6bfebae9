"""The WebSocket import's pure parts: which locations are Home Assistant, its base URL, how a window's
rows become pages (never splitting an instant) and how the window adapts."""

from __future__ import annotations

import pytest

from ingest_worker.ha_history import HistoryItem
from ingest_worker.importers.history_ws import (
    US_PER_S,
    WINDOW_MAX_S,
    WINDOW_MIN_S,
    base_url,
    is_home_assistant,
    next_window,
    pages,
)
from ingest_worker.importers.recorder_db import RecorderError


def test_home_assistant_locations_and_their_base_url() -> None:
    assert [is_home_assistant(loc) for loc in ("http://ha:8123", "WSS://ha/api/websocket", "/data/ha.db",
                                                "postgresql://u@h/db", "sqlite:////x.db")] == [
        True, True, False, False, False]
    assert base_url("ws://10.0.0.2:8123/api/websocket/") == "ws://10.0.0.2:8123"
    assert base_url("HTTPS://user:secret@ha.example:8443/?access_token=x#f") == "https://ha.example:8443"
    assert base_url("http://[::1]:8123") == "http://[::1]:8123"
    assert base_url("http://proxy/ha/api/websocket") == "http://proxy/ha"
    with pytest.raises(RecorderError, match="is not a Home Assistant address"):
        base_url("http://:8123")


def item(stamp: int | None, entity: str = "sensor.a") -> HistoryItem:
    return HistoryItem(f"websocket:history:{entity}", b"{}", stamp, True)


def test_pages_end_only_between_instants_and_carry_their_position() -> None:
    rows = [item(30, "sensor.b"), item(10), item(20, "sensor.c"), item(20, "sensor.b"), item(20), item(40),
            item(None, "sensor.junk")]
    found = [([(i.stamp_us, i.topic[-1]) for i in page], position) for page, position in pages(rows, 2, 5)]
    assert found == [([(None, "k"), (10, "a")], 10),
                     ([(20, "a"), (20, "b"), (20, "c")], 20),  # three rows of one instant stay together
                     ([(30, "b"), (40, "a")], 40)]
    assert list(pages([], 2, 5)) == []
    assert [position for _, position in pages([item(None)], 2, 5)] == [5]  # nothing positioned: stays


def test_the_window_halves_when_full_and_doubles_when_sparse_within_bounds() -> None:
    hour = 3_600 * US_PER_S
    assert next_window(hour, 5_001, 5_000) == hour // 2
    assert next_window(hour, 1_249, 5_000) == hour * 2
    assert next_window(hour, 1_250, 5_000) == hour
    assert next_window(WINDOW_MIN_S * US_PER_S, 10**6, 5_000) == WINDOW_MIN_S * US_PER_S
    assert next_window(WINDOW_MAX_S * US_PER_S, 0, 5_000) == WINDOW_MAX_S * US_PER_S
