"""Home Assistant's own availability: its MQTT birth (`online`) and last-will (`offline`) message.

Recorded as the state of a pseudo-entity so gaps in every other series can be told apart from "Home
Assistant was down" (the broker publishes the will when HA disappears without a clean shutdown).
"""

from __future__ import annotations

from ingest_worker.normalise import EntityState
from ingest_worker.rejections import Reason, Rejected
from ingest_worker.sources.base import Outcome, SingleTopicSource

SOURCE = "status"
DEFAULT_TOPIC = "homeassistant/status"
ENTITY_ID = "homeassistant.status"
# HA's default birth and will payloads (mqtt: birth_message / will_message); exact match, as HA sends them.
STATUS_PAYLOADS = frozenset({"online", "offline"})


def parse(payload: bytes) -> EntityState:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(Reason.NOT_UTF8, f"payload is not UTF-8 at byte {exc.start}") from None
    if text not in STATUS_PAYLOADS:
        raise Rejected(Reason.SCHEMA, f"status payload {text[:64]!r} is neither 'online' nor 'offline'")
    return EntityState(entity_id=ENTITY_ID, state=text, source=SOURCE)


class StatusSource(SingleTopicSource):
    """The birth/will topic (`birth_message.topic` in Home Assistant's MQTT settings)."""

    name = SOURCE

    def __init__(self, topic: str = DEFAULT_TOPIC) -> None:
        super().__init__(topic)

    def handle(self, topic: str, payload: bytes, received_ns: int | None = None, retained: bool = False) -> Outcome:
        return Outcome(states=(parse(payload),))
