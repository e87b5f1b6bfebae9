"""The worker's MQTT link against the test stack's real Mosquitto when the broker reuses the packet ids of
unacknowledged messages (Debian 12's 2.0.11 does under a backlog: ingest_worker/ack_order.py), with the
acknowledgements asked in the out-of-order way the pipeline asks them, some in groups: nothing is lost, a
group's later message is never acknowledged before its first, and what comes back comes back with its first
receipt time."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ingest_worker.mqtt_link import Incoming, LinkSettings, MqttLink
from ingest_worker.tls import mqtt_context
from tests.conftest import Tenant, wait_for
from tests.integration.test_worker_durability import publisher

pytestmark = pytest.mark.integration

BACKLOG = 100_000  # over 65,535: once most of it is in flight, packet ids must repeat
FIRST_WINDOW = 20_000  # devstack/mosquitto.py MAX_INFLIGHT_MESSAGES


def link(tenant: Tenant, journal: Path, topic_filter: str) -> tuple[MqttLink, list[Incoming]]:
    env = tenant.env
    received: list[Incoming] = []
    made: list[MqttLink] = []

    def take() -> None:
        received.extend(made[0].take())

    settings = LinkSettings("127.0.0.1", int(env["HATS_MQTT_PORT"]), env["HATS_MQTT_USERNAME"],
                            env["HATS_MQTT_PASSWORD"], env["HATS_MQTT_CLIENT_ID"], [(topic_filter, False)],
                            tls=mqtt_context(env), journal_dir=journal)
    made.append(MqttLink(settings, take))
    made[0].start()
    return made[0], received


def publish_backlog(tenant: Tenant, topic: str) -> None:
    """BACKLOG QoS 1 messages, each payload its sequence number; the publisher's close waits for every PUBACK."""
    pub = publisher(tenant)
    try:
        for seq in range(BACKLOG):
            pub.publish(str(seq).encode(), topic=topic)
    finally:
        pub.close()


def test_acks_asked_out_of_order_under_reused_packet_ids_lose_nothing_and_restamp_nothing(
        tenant: Tenant, tmp_path: Path) -> None:
    topic = f"{tenant.topic}/backlog"
    first, _ = link(tenant, tmp_path, topic)  # creates the persistent session and its subscription
    wait_for(lambda: first.subscribed, "the subscription")
    first.stop()
    publish_backlog(tenant, topic)

    worker, received = link(tenant, tmp_path, topic)
    wait_for(lambda: len(received) >= FIRST_WINDOW, f"the first {FIRST_WINDOW} messages of the backlog")
    # Acknowledging the oldest in-flight messages widens Mosquitto 2.0.11's window by up to FIRST_WINDOW
    # each (ack_order.py): a few, and packet ids repeat among the unacknowledged messages.
    oldest = received[:4]
    worker.ack(oldest)
    wait_for(lambda: max(Counter(m.mid for m in received).values()) > 1,
             "two unacknowledged messages under one packet id (the broker's window past 65,535)", timeout=120)
    snapshot = list(received)
    worker.persist(snapshot)  # as the pipeline does before a write: receipt times that survive a redelivery
    # Under every other id taken twice or more, the newer messages are released and the oldest is not, as a
    # held or parked older message leaves them: a PUBACK for a newer one would remove the oldest at the broker.
    under: dict[int, list[Incoming]] = {}
    for message in snapshot[len(oldest):]:
        under.setdefault(message.mid, []).append(message)
    reused = [messages for messages in under.values() if len(messages) > 1]
    released = [m for messages in reused[::2] for m in messages[1:]]
    # Under the others all are acknowledged, in order: each PUBACK could go at once. Some of their newer
    # messages follow a released message instead, as a held statestream state's timestamp follows it: in
    # that group a follower waits for its first message, which waits for the oldest under its id, so the
    # follower must come back too (ack_order.py).
    position = {id(m): index for index, m in enumerate(snapshot)}
    free = sorted((m for messages in reused[1::2] for m in messages[1:]), key=lambda m: position[id(m)])
    groups: list[list[Incoming]] = []
    for leader in sorted(released[::2], key=lambda m: position[id(m)]):
        while free and position[id(free[0])] < position[id(leader)]:
            free.pop(0)
        if free:
            groups.append([leader, free.pop(0)])
    followers = {int(group[1].payload) for group in groups}
    leading = {id(group[0]) for group in groups}
    in_order = [m for messages in reused[1::2] for m in messages if int(m.payload) not in followers]
    worker.ack(in_order + [m for m in released if id(m) not in leading], groups)
    worker.stop()  # sends what it may, then DISCONNECT: the broker handles every PUBACK before it

    again, redelivered = link(tenant, tmp_path, topic)
    acknowledged = 0
    acked_first = {int(m.payload) for m in oldest + in_order}
    missing: set[int] = set()

    def everything_back() -> bool:
        nonlocal acknowledged
        batch = redelivered[acknowledged:]
        again.ack(batch)  # in arrival order: each PUBACK names the message it is meant for
        acknowledged += len(batch)
        missing.clear()
        missing.update(set(range(BACKLOG)) - {int(m.payload) for m in redelivered} - acked_first)
        return not missing

    try:
        wait_for(everything_back, f"all {BACKLOG} messages but the {len(acked_first)} acknowledged", timeout=180)
    except pytest.fail.Exception:
        early = missing & followers
        pytest.fail(f"{len(missing)} of {BACKLOG} messages never came back: {len(early)} of them followers "
                    f"acknowledged before their group's first message, the rest taken by a PUBACK meant for "
                    f"another under their packet id (e.g. seq {sorted(missing - early)[:5]}); {len(released)} "
                    f"released under reused ids")
    finally:
        again.stop()
    assert released, "no message was released under a reused packet id: the test proved nothing"
    assert followers, "no group had a follower: the test proved nothing of the group order"
    lost = followers - {int(m.payload) for m in redelivered}
    assert not lost, f"{len(lost)} of {len(followers)} followers were acknowledged before their group's first message"
    assert not acked_first & {int(m.payload) for m in redelivered}, "a message acknowledged in order came back"
    first_receipt = {int(m.payload): m.received_ns for m in snapshot}
    restamped = [seq for seq, ns in ((int(m.payload), m.received_ns) for m in redelivered)
                 if seq in first_receipt and ns != first_receipt[seq]]
    assert restamped == [], f"{len(restamped)} redelivered messages lost their first receipt time"
