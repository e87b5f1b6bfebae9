"""When a worker may judge a message no source owns yet: once it has *processed* the broker's retained replay.

A restarted worker resumes its persistent session, and a state topic of a discovery device (zigbee2mqtt,
ESPHome, …) is owned only once that device's retained discovery config has been handled. Mosquitto sends,
in this order: the messages it queued for the session, up to its in-flight window (`max_inflight_messages`,
20,000 here); the SUBACKs; the rest of the queue, one message per acknowledgement; and only then the
retained messages of the re-sent SUBSCRIBEs, flagged `retain` (measured on this stack with 50,000 queued:
the SUBACK after message 20,000, the retained config after message 50,002). A window of wall time after the
SUBACK closes while a worker slow on that backlog has not reached the configs yet (the soak: 16,357 states
dead-lettered as unowned after one restart). So the window follows what the pipeline has processed:

* until the SUBACKs of the current connection have come, it is open;
* it closes at the first message that arrived `SETTLE_S` of receipt time after the last retained message
  that came after the SUBACKs: live traffic, queued behind the replay (the replay itself arrives in a burst);
* it also closes when the pipeline has had nothing to process for `SETTLE_S` since the SUBACKs or its last
  message, and holds no state a source will emit by itself: nothing more is coming (no retained message on
  the filters, or the parked messages fill the broker's in-flight window and it waits for their
  acknowledgements — then they are dead-lettered as before). While a source holds states (statestream's
  undescribed states after a restart, held up to 30 s) their unacknowledged messages may be what fills that
  window: the broker resumes, mid-replay, once they are emitted and acknowledged. Closing then released the
  parked states of a device whose configs were only partly replayed (soak run C: 18 readings of
  `sensor.plug_00051_power` gone while the same messages' energy and linkquality landed).

A new connection opens it again (a broker restart replays the retained messages too). Receipt times of
redelivered messages come from the receipt journal and are older than the SUBACK, so they never count as
after it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ingest_worker.mqtt_link import Incoming, MqttLink

# Receipt time past the last retained message (or idle time) after which the replay is taken as complete.
SETTLE_S = 2.0
_SETTLE_NS = int(SETTLE_S * 1e9)


class SettleWindow:
    """One pipeline's view of its link's retained replay; `closes_at` is called once per hand-off batch."""

    def __init__(self, link: MqttLink | None) -> None:
        self._link = link
        self._connection = -1  # the link's connection the state below belongs to
        self._open = link is not None
        self._last_retained_ns: int | None = None
        self._busy_at = time.monotonic()  # when the pipeline last had messages to process

    @property
    def open(self) -> bool:
        return self._open

    def closes_at(self, items: Sequence[Incoming], holding: bool = False) -> int:
        """How many of `items` come before the window closes: `len(items)` while it stays open, 0 once closed
        (check `open` after the call). `holding`: a source holds states whose messages are unacknowledged."""
        link = self._link
        if link is None:
            return 0
        connection = link.connection
        if connection != self._connection:
            self._connection, self._open, self._last_retained_ns = connection, True, None
        if not self._open:
            return 0
        now = time.monotonic()
        if items:
            self._busy_at = now
        subscribed_ns, subscribed_at = link.subscribed_ns, link.subscribed_at
        if subscribed_ns is None or subscribed_at is None:
            return len(items)
        if not items:
            if holding:
                self._busy_at = now  # the broker may be waiting for those acknowledgements: not idle yet
            elif now - max(self._busy_at, subscribed_at) >= SETTLE_S:
                self._open = False
            return 0
        last = self._last_retained_ns
        for index, item in enumerate(items):
            received = item.received_ns
            if item.connection != connection or received < subscribed_ns:
                continue  # before the SUBACKs: the session's backlog (or a redelivery with its first receipt time)
            if item.retain:
                last = received if last is None else max(last, received)
            elif last is not None and received - last >= _SETTLE_NS:
                self._open = False
                self._last_retained_ns = last
                return index
        self._last_retained_ns = last
        return len(items)
