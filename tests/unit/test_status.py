"""Home Assistant's birth and last-will messages on its status topic."""

from __future__ import annotations

import pytest

from ingest_worker.normalise import EntityState, normalise
from ingest_worker.rejections import Reason, Rejected
from ingest_worker.sources.base import Outcome, Source
from ingest_worker.sources.status import StatusSource


def test_it_is_a_source_on_homeassistants_default_topic() -> None:
    source: Source = StatusSource()
    assert source.name == "status"
    assert source.filters() == ("homeassistant/status",)
    assert source.matches("homeassistant/status")
    assert not source.matches("homeassistant/status/x")
    assert source.flush() == ()


def test_a_custom_topic_is_used() -> None:
    source = StatusSource("hats/acme/ha/status")
    assert source.filters() == ("hats/acme/ha/status",)
    assert source.matches("hats/acme/ha/status")
    assert not source.matches("homeassistant/status")


@pytest.mark.parametrize("payload", [b"online", b"offline"])
def test_birth_and_will_become_the_status_pseudo_entity(payload: bytes) -> None:
    outcome = StatusSource().handle("homeassistant/status", payload)
    assert outcome == Outcome(states=(EntityState(entity_id="homeassistant.status", state=payload.decode(),
                                                  source="status"),))
    point = normalise(outcome.states[0], received_ns=42)
    # Recorded as an availability event: 1.0 while Home Assistant is online, 0.0 once its will fires.
    assert (point.measurement, point.value, point.time_ns, point.tag("domain")) == (
        "availability", 1.0 if payload == b"online" else 0.0, 42, "homeassistant")


@pytest.mark.parametrize(("payload", "reason"), [
    (b"Online", Reason.SCHEMA), (b"online\n", Reason.SCHEMA), (b"", Reason.SCHEMA), (b'"online"', Reason.SCHEMA),
    (b"restarting", Reason.SCHEMA), (b"\xff", Reason.NOT_UTF8),
])
def test_anything_else_is_rejected(payload: bytes, reason: Reason) -> None:
    with pytest.raises(Rejected) as caught:
        StatusSource().handle("homeassistant/status", payload)
    assert caught.value.reason is reason
