"""The settle window follows the messages processed, not the wall clock (ingest_worker/settling.py), and the
session's granted filters survive a restart (ingest_worker/session_filters.py)."""

from __future__ import annotations

import time
from pathlib import Path

from ingest_worker.mqtt_link import Incoming, LinkSettings, MqttLink
from ingest_worker.session_filters import FILE_NAME, SessionFilters
from ingest_worker.settling import SETTLE_S, SettleWindow

S = 1_800_000_000_000_000_000  # the SUBACK's receipt instant (epoch ns)
SECOND = 1_000_000_000


def link_with_suback(connection: int = 1, at_ns: int | None = S) -> MqttLink:
    """A link never started (no network): its connection and SUBACK instant set as its thread would."""
    link = MqttLink(LinkSettings("127.0.0.1", 1, "u", "p", "c", []), on_batch=lambda: None)
    link._connection = connection
    link.subscribed_ns = at_ns
    link.subscribed_at = None if at_ns is None else time.monotonic()
    return link


def is_open(window: SettleWindow) -> bool:
    """Read afresh each time (a property mypy would otherwise narrow across calls)."""
    return window.open


def message(received_ns: int, retain: bool = False, connection: int = 1) -> Incoming:
    return Incoming("hats/t/zigbee2mqtt/door", b"{}", 1, 1, connection, received_ns, retain=retain)


def test_open_until_the_suback_however_many_messages_come() -> None:
    window = SettleWindow(link_with_suback(at_ns=None))
    items = [message(S + i * SECOND) for i in range(10)]
    assert window.closes_at(items) == len(items)
    assert is_open(window)


def test_closes_at_the_first_message_received_settle_s_after_the_last_retained_one() -> None:
    window = SettleWindow(link_with_suback())
    backlog = [message(S + i * SECOND // 10) for i in range(100)]  # 10 s of backlog after the SUBACK
    assert window.closes_at(backlog) == len(backlog)  # no retained message yet: the replay is still to come
    assert is_open(window)
    replay = [message(S + 11 * SECOND, retain=True), message(S + 12 * SECOND, retain=True)]
    live = [message(S + 12 * SECOND + int(SETTLE_S * SECOND) - 1), message(S + 12 * SECOND + int(SETTLE_S * SECOND))]
    assert window.closes_at(replay + live) == 3  # the last one is the first live message past SETTLE_S
    assert not is_open(window)
    assert window.closes_at([message(S + 20 * SECOND)]) == 0


def test_messages_from_before_the_suback_never_count_even_retained_ones() -> None:
    window = SettleWindow(link_with_suback())
    redelivered = [message(S - 5 * SECOND, retain=True), message(S - 1)]  # first receipt times: before it
    later = [message(S + 10 * SECOND)]
    assert window.closes_at(redelivered + later) == 3
    assert is_open(window)  # nothing retained came after the SUBACK: still waiting for the replay


def test_a_new_connection_opens_it_again() -> None:
    link = link_with_suback()
    window = SettleWindow(link)
    assert window.closes_at([message(S, retain=True), message(S + 3 * SECOND)]) == 1
    assert not is_open(window)
    link._connection, link.subscribed_ns, link.subscribed_at = 2, None, None
    assert window.closes_at([message(S + 4 * SECOND, connection=2)]) == 1
    assert is_open(window)


def test_without_a_link_there_is_no_window() -> None:
    window = SettleWindow(None)
    assert window.closes_at([message(S)]) == 0
    assert not is_open(window)


def test_granted_filters_outlive_the_process_and_a_new_session_forgets_them(tmp_path: Path) -> None:
    first = SessionFilters(tmp_path)
    first.granted("$share/g/hats/t/homeassistant/events")
    first.granted("hats/t/homeassistant/+/+/config")
    first.removed("hats/t/homeassistant/+/+/config")
    assert SessionFilters(tmp_path).held() == frozenset()  # not written before the network loop's turn ends
    first.flush()
    assert SessionFilters(tmp_path).held() == {"$share/g/hats/t/homeassistant/events"}
    second = SessionFilters(tmp_path)
    second.new_session()  # written at once
    assert SessionFilters(tmp_path).held() == frozenset()


def test_an_unreadable_record_means_waiting_for_the_subacks(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text("{not json")
    assert SessionFilters(tmp_path).held() == frozenset()


def test_idle_closes_the_window_only_once_no_source_holds_states_the_broker_may_be_waiting_for() -> None:
    link = link_with_suback()
    link.subscribed_at = time.monotonic() - 10 * SETTLE_S
    window = SettleWindow(link)
    window._busy_at = time.monotonic() - 10 * SETTLE_S  # idle for long: no message since the SUBACK
    assert window.closes_at([], holding=True) == 0
    assert is_open(window)  # held statestream states fill the in-flight window: the replay resumes after them
    assert window.closes_at([], holding=False) == 0
    assert is_open(window)  # idle counts from the moment nothing was held any more
    window._busy_at = time.monotonic() - SETTLE_S
    assert window.closes_at([], holding=False) == 0
    assert not is_open(window)
