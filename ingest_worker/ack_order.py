"""PUBACKs in the order a broker whose packet ids collide still matches to the right messages.

MQTT gives each unacknowledged message its own packet id, and a PUBACK names the message by that id. The
broker Debian 12 ships (Mosquitto 2.0.11) breaks this under a backlog: each PUBACK of its oldest in-flight
message moves up to `max_inflight_messages` more queued messages into flight (its loop counts the acked
message's position, not the window; fixed in 2.0.13), so the window grows past 65,535 and two
unacknowledged messages share an id. Measured here: 20,000 in flight, three PUBACKs later 80,000, two
messages per id; the soak saw up to nine distinct messages redelivered under one id.

A PUBACK then removes the *first* in-flight message with that id, in the order the broker sent them. The
worker acknowledges out of arrival order (a held statestream state waits for its attributes, a parked
message for the retained replay, a retained replay goes at once), so a PUBACK meant for a newer message
removed an older one still unwritten, lost if the worker died next, while the newer stayed in flight and
came back, stamped anew, as a second point (soak: +39,644 discovery points in 15 min; 0 after).

So, per connection, the messages unacknowledged under each packet id are kept in arrival order, and a
PUBACK goes only for the oldest of them; one asked for a newer message waits until the older ones were
acknowledged. With unique ids (any correct broker) every list holds one message and each PUBACK goes at once.

That wait must not tear a group the pipeline acknowledges together: a held statestream state and the
timestamp and attributes that arrived after it. Had the state's PUBACK waited while its timestamp's went,
a crash would bring the state back alone, stamped at receipt time: a second point (soak run G: 2,003
states redelivered without their `last_updated` after one kill). So a group's later messages (`followers`)
go only once its first message's PUBACK has gone, each then by the rule above. Every wait is for an older
message (an older one under the same id, or the group's first, which arrived before the rest), so no two
messages can wait for each other. The PUBACKs leave in that order on one connection and the broker handles
them in order: whatever a crash cuts off, a follower was never acknowledged without its first message.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar


class _Identified(Protocol):
    @property
    def mid(self) -> int: ...


M = TypeVar("M", bound=_Identified)


class AckOrder(Generic[M]):
    """One connection's unacknowledged QoS>0 messages by packet id; used on the network thread only."""

    def __init__(self) -> None:
        self._by_mid: dict[int, deque[M]] = {}
        # id() of each message asked for whose PUBACK waits for an older one under its id → its followers.
        self._asked: dict[int, Sequence[M]] = {}
        self.collisions = 0  # messages that arrived while another under their packet id was unacknowledged

    def received(self, message: M) -> bool:
        """Record an arrival; True if its packet id was already taken by an unacknowledged message."""
        waiting = self._by_mid.get(message.mid)
        if waiting is None:
            self._by_mid[message.mid] = deque((message,))
            return False
        waiting.append(message)
        self.collisions += 1
        return True

    def ack(self, message: M, followers: Sequence[M] = ()) -> list[M]:
        """The messages whose PUBACK can go now, in order: `message` if it is the oldest under its id, and the
        newer ones under that id already asked for; none while an older one is unacknowledged. `followers`
        (messages that arrived after `message`) are asked for only once its PUBACK has gone."""
        ready: list[M] = []
        todo: deque[tuple[M, Sequence[M]]] = deque(((message, followers),))
        while todo:
            asked, after = todo.popleft()
            waiting = self._by_mid.get(asked.mid)
            if waiting is None or not any(m is asked for m in waiting):
                # Not of this connection (the broker resends it if need be) or acknowledged already: nothing of
                # it is unacknowledged here that its followers could overtake.
                todo.extend((follower, ()) for follower in after)
                continue
            self._asked[id(asked)] = after
            while waiting and id(waiting[0]) in self._asked:
                sent = waiting.popleft()
                ready.append(sent)
                todo.extend((follower, ()) for follower in self._asked.pop(id(sent)))
            if not waiting:
                del self._by_mid[asked.mid]
        return ready

    def __len__(self) -> int:
        return sum(len(waiting) for waiting in self._by_mid.values())
