"""What every source parser promises the pipeline.

A source owns a family of topics (statestream, eventstream, discovery, status). It turns one MQTT
message into zero or more `EntityState`s, may ask for topics to be (un)subscribed (discovery learns
state topics at run time), and raises `Rejected` for anything invalid. Sources that must see a whole
burst before emitting (statestream: a state and its attributes arrive on separate topics) hold states
back until `flush()`, which the pipeline calls after each hand-off batch from the network thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ingest_worker.normalise import EntityState


@dataclass(frozen=True, slots=True)
class Outcome:
    states: tuple[EntityState, ...] = ()
    subscribe: tuple[str, ...] = ()
    unsubscribe: tuple[str, ...] = ()
    # Why a valid message produced nothing (counted, never dead-lettered), e.g. "event_type".
    ignored: str | None = None


class Source(Protocol):
    name: str

    def filters(self) -> tuple[str, ...]:
        """MQTT topic filters to subscribe at start."""
        ...

    def matches(self, topic: str) -> bool:
        """Whether this source owns the topic (checked in order; the first owner handles it)."""
        ...

    def handle(self, topic: str, payload: bytes) -> Outcome:
        """Parse one message; raise `Rejected` when it is invalid."""
        ...

    def flush(self) -> tuple[EntityState, ...]:
        """States held back until the end of a hand-off batch (most sources hold none)."""
        ...
