"""What every source parser promises the pipeline.

A source owns a family of topics (statestream, eventstream, discovery, status). It turns one MQTT
message into zero or more `EntityState`s, may ask for topics to be (un)subscribed (discovery learns
state topics at run time), and raises `Rejected` for anything invalid. Sources that must see a whole
burst before emitting (statestream: a state and its attributes arrive on separate topics) hold states
back until `flush()`, which the pipeline calls on every tick (and with `force` when it stops); they name
the held state in `Outcome.held_by`, and the pipeline acknowledges such a message only once that state
(emitted with the same `origin`) is durable. A held state must be emitted within a bounded time (it
holds the broker's in-flight window), never dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from ingest_worker.normalise import EntityState
from ingest_worker.rejections import Reason, Rejected

# What json.loads raises beyond JSONDecodeError on hostile input: ValueError for integers over
# Python's digit limit, RecursionError for deep nesting. Each is a bad payload, never a worker crash.
JSON_ERRORS = (ValueError, RecursionError)


def parse_json(text: str, what: str = "payload") -> object:
    """The one JSON parse for payloads: every failure is a dead letter with reason invalid_json."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Rejected(Reason.INVALID_JSON, f"{what}: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except JSON_ERRORS as exc:
        raise Rejected(Reason.INVALID_JSON, f"{what}: {type(exc).__name__}: {str(exc)[:200]}") from None


def json_bytes(value: object, separators: tuple[str, str] | None = None) -> bytes:
    """A parsed message as the payload of an item (`parse_json` reads it back to the same value). UTF-8 as
    received; a message holding a lone surrogate (JSON can escape one, UTF-8 cannot carry it) is written
    with ASCII escapes instead, so it stays one payload a source parses, never an error in the link."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=separators).encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=separators).encode()


@dataclass(frozen=True, slots=True)
class Outcome:
    states: tuple[EntityState, ...] = ()
    subscribe: tuple[str, ...] = ()
    unsubscribe: tuple[str, ...] = ()
    # Why a valid message produced nothing (counted, never dead-lettered), e.g. "event_type".
    ignored: str | None = None
    # The `origin` of a state the source still holds that this message contributed to (its own state,
    # or a timestamp or attribute of it): the message's acknowledgement waits until that state is
    # emitted, so a crash meanwhile leaves it with the broker to redeliver, not lost.
    held_by: tuple[str, bytes, int] | None = None


class Source(Protocol):
    name: str

    def filters(self) -> tuple[str, ...]:
        """MQTT topic filters to subscribe at start."""
        ...

    def matches(self, topic: str) -> bool:
        """Whether this source owns the topic (checked in order; the first owner handles it)."""
        ...

    def handle(self, topic: str, payload: bytes, received_ns: int | None = None, retained: bool = False) -> Outcome:
        """Parse one message; raise `Rejected` when it is invalid. `received_ns` is when it was received
        (a replayed one: when it first was), for a state held back that carries no time of its own.
        `retained`: it came from the broker's retained store (a re-subscription's replay), not live."""
        ...

    def flush(self, force: bool = False) -> tuple[EntityState, ...]:
        """States held back until complete (most sources hold none); `force` drains them all."""
        ...

    def take_rejections(self) -> list[Rejected]:
        """Parts of the latest message that failed while `handle` returned the rest (discovery: one
        entity of several on a state topic); dead-lettered with that message. Most sources have none."""
        ...


class SingleTopicSource:
    """A source that owns exactly one topic and holds nothing back (eventstream, status)."""

    name: str

    def __init__(self, topic: str) -> None:
        self._topic = topic

    def filters(self) -> tuple[str, ...]:
        return (self._topic,)

    def matches(self, topic: str) -> bool:
        return topic == self._topic

    def flush(self, force: bool = False) -> tuple[EntityState, ...]:
        return ()

    def take_rejections(self) -> list[Rejected]:
        return []
