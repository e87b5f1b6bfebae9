"""AckOrder against a model of the broker's rule: a PUBACK removes the first in-flight message (in send
order) with its packet id. Whatever order the pipeline asks in, the PUBACKs that go must remove exactly
the messages asked for, and none before it asked (ingest_worker/ack_order.py)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest_worker.ack_order import AckOrder


@dataclass(eq=False)
class Message:
    mid: int
    seq: int  # its place in the broker's send order


def broker_removes(in_flight: list[Message], mid: int) -> Message:
    """Mosquitto's db__message_delete_outgoing: the first in-flight message under `mid`."""
    for message in in_flight:
        if message.mid == mid:
            in_flight.remove(message)
            return message
    raise AssertionError(f"a PUBACK for {mid} with nothing in flight under it")


def test_unique_packet_ids_are_acknowledged_at_once_in_any_order() -> None:
    order: AckOrder[Message] = AckOrder()
    messages = [Message(mid, seq) for seq, mid in enumerate((5, 6, 7))]
    for message in messages:
        assert not order.received(message)
    assert order.ack(messages[2]) == [messages[2]]
    assert order.ack(messages[0]) == [messages[0]]
    assert order.ack(messages[1]) == [messages[1]]
    assert len(order) == 0
    assert order.collisions == 0


def test_a_newer_message_under_a_taken_id_waits_for_the_older_one() -> None:
    order: AckOrder[Message] = AckOrder()
    older, newer = Message(9, 0), Message(9, 1)
    order.received(older)
    assert order.received(newer)  # the id is taken: a collision
    assert order.ack(newer) == []  # its PUBACK would remove `older` at the broker
    assert order.ack(older) == [older, newer]  # now both, oldest first: each removes the one meant
    assert len(order) == 0


def test_a_message_of_another_connection_or_acknowledged_twice_sends_nothing() -> None:
    order: AckOrder[Message] = AckOrder()
    message = Message(3, 0)
    order.received(message)
    assert order.ack(Message(3, 0)) == []  # same id, not the message received here
    assert order.ack(message) == [message]
    assert order.ack(message) == []


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=400), st.integers(min_value=1, max_value=40), st.randoms())
def test_every_puback_removes_the_message_it_was_sent_for(count: int, ids: int, rng: random.Random) -> None:
    """Messages under few ids (collisions galore) acknowledged in a random order, as the pipeline does."""
    order: AckOrder[Message] = AckOrder()
    in_flight = [Message(rng.randrange(1, ids + 1), seq) for seq in range(count)]
    for message in in_flight:
        order.received(message)
    asked: set[int] = set()
    acknowledged: list[Message] = []
    for message in rng.sample(in_flight, len(in_flight)):
        asked.add(message.seq)
        for sent in order.ack(message):
            assert sent.seq in asked  # never a PUBACK for a message the pipeline has not released
            assert broker_removes(in_flight, sent.mid) is sent
            acknowledged.append(sent)
    assert in_flight == []
    assert len(acknowledged) == count
    assert len(order) == 0


def test_a_follower_waits_for_its_first_message_held_back_under_a_taken_id() -> None:
    """A held state whose id an older message took, and its timestamp under an id of its own: the timestamp's
    PUBACK alone would let a crash bring the state back without it (a point at receipt time)."""
    order: AckOrder[Message] = AckOrder()
    older, state, stamp = Message(4, 0), Message(4, 1), Message(8, 2)
    for message in (older, state, stamp):
        order.received(message)
    assert order.ack(state, [stamp]) == []  # the state waits for `older`, and its timestamp for the state
    assert order.ack(older) == [older, state, stamp]
    assert len(order) == 0


def test_followers_of_a_message_not_of_this_connection_go_by_their_own_ids() -> None:
    order: AckOrder[Message] = AckOrder()
    stamp = Message(2, 0)
    order.received(stamp)
    assert order.ack(Message(1, 0), [stamp]) == [stamp]  # its first message is not unacknowledged here


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.integers(min_value=1, max_value=30), st.randoms())
def test_groups_asked_in_any_order_never_acknowledge_a_follower_before_its_first_message(
        count: int, ids: int, rng: random.Random) -> None:
    """Messages under few ids, cut into groups (each led by its oldest member, as a held state is older than
    its timestamp and attributes) and asked for group by group in a random order: each PUBACK removes the
    message it was sent for, a follower's never goes before its leader's, and nothing waits for ever."""
    order: AckOrder[Message] = AckOrder()
    in_flight = [Message(rng.randrange(1, ids + 1), seq) for seq in range(count)]
    for message in in_flight:
        order.received(message)
    shuffled = rng.sample(in_flight, len(in_flight))
    groups: list[list[Message]] = []
    while shuffled:
        size = rng.randint(1, 5)
        groups.append(sorted(shuffled[:size], key=lambda m: m.seq))
        shuffled = shuffled[size:]
    leader_of = {member.seq: group[0].seq for group in groups for member in group[1:]}
    asked: set[int] = set()
    acknowledged: set[int] = set()
    for group in rng.sample(groups, len(groups)):
        asked.update(m.seq for m in group)
        for sent in order.ack(group[0], group[1:]):
            assert sent.seq in asked
            assert leader_of.get(sent.seq, sent.seq) in acknowledged | {sent.seq}, "a follower before its leader"
            assert broker_removes(in_flight, sent.mid) is sent
            acknowledged.add(sent.seq)
    assert in_flight == [], f"{len(in_flight)} message(s) never acknowledged: a wait that never ends"
    assert len(order) == 0
