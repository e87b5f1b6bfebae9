"""Small synchronous MQTT 5 helpers for tests: reason codes tell us what the broker's ACL decided.

They connect over TLS with the test stack's CA, as every client of the stack does (the stack's broker and
the throw-away ones of tests/dynsec_broker.py serve the stack's certificate); `plaintext=True` tries
without TLS, which the stack's broker refuses.
"""

from __future__ import annotations

import functools
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from devstack import certs
from devstack.profile import load_profile
from ingest_worker.tls import client_context

TIMEOUT_S = 10.0


@functools.cache
def stack_tls() -> ssl.SSLContext:
    """The test stack's CA context (its certificates are made by `hats up`, before any test connects)."""
    return client_context(certs.ca_file(load_profile("test")))


def _secure(client: mqtt.Client, plaintext: bool) -> None:
    if not plaintext:
        client.tls_set_context(stack_tls())


@dataclass
class Session:
    client: mqtt.Client
    received: list[mqtt.MQTTMessage] = field(default_factory=list)
    acks: dict[int, ReasonCode] = field(default_factory=dict)
    subacks: dict[int, list[ReasonCode]] = field(default_factory=dict)
    # Reason codes of every disconnection the broker caused while the session was open (paho reconnects).
    disconnects: list[ReasonCode] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def wait(self, predicate: object, what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout=TIMEOUT_S):  # type: ignore[arg-type]
                raise TimeoutError(f"MQTT: no {what} within {TIMEOUT_S} s")

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1)
        self.wait(lambda: info.mid in self.acks, f"PUBACK for {topic}")
        return self.acks[info.mid]

    def subscribe(self, topic: str) -> ReasonCode:
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        self.wait(lambda: mid in self.subacks, f"SUBACK for {topic}")
        return self.subacks[mid][0]


def connect_code(port: int, username: str | None, password: str | None, client_id: str = "",
                 v311: bool = False, plaintext: bool = False) -> ReasonCode:
    """The CONNACK reason code the broker answers these credentials (and client id) with."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv311 if v311 else mqtt.MQTTv5)
    if username is not None:
        client.username_pw_set(username, password)
    _secure(client, plaintext)
    result: list[ReasonCode] = []
    done = threading.Event()

    def on_connect(c: mqtt.Client, u: object, f: object, rc: ReasonCode, p: object) -> None:
        result.append(rc)
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        if not done.wait(TIMEOUT_S):
            raise TimeoutError("no CONNACK")
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


@contextmanager
def session(port: int, username: str, password: str, client_id: str = "", clean_start: bool = True,
            session_expiry_s: int = 0, v311: bool = False, plaintext: bool = False) -> Iterator[Session]:
    """An MQTT 5 session (reason codes), or with `v311` a 3.1.1 one as the worker uses."""
    if v311:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                             clean_session=clean_start)
    else:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    _secure(client, plaintext)
    s = Session(client)
    connected = threading.Event()

    def on_connect(c: mqtt.Client, u: object, f: object, rc: ReasonCode, p: object) -> None:
        if not rc.is_failure:
            connected.set()

    def on_publish(c: mqtt.Client, u: object, mid: int, rc: ReasonCode, p: object) -> None:
        with s.cond:
            s.acks[mid] = rc
            s.cond.notify_all()

    def on_subscribe(c: mqtt.Client, u: object, mid: int, rcs: list[ReasonCode], p: object) -> None:
        with s.cond:
            s.subacks[mid] = rcs
            s.cond.notify_all()

    def on_message(c: mqtt.Client, u: object, message: mqtt.MQTTMessage) -> None:
        with s.cond:
            s.received.append(message)
            s.cond.notify_all()

    def on_disconnect(c: mqtt.Client, u: object, f: object, rc: ReasonCode, p: object) -> None:
        with s.cond:
            s.disconnects.append(rc)
            s.cond.notify_all()

    client.on_connect, client.on_publish, client.on_disconnect = on_connect, on_publish, on_disconnect
    client.on_subscribe, client.on_message = on_subscribe, on_message
    if v311:
        client.connect("127.0.0.1", port)
    else:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = session_expiry_s
        client.connect("127.0.0.1", port, clean_start=clean_start, properties=props)
    client.loop_start()
    try:
        if not connected.wait(TIMEOUT_S):
            raise TimeoutError(f"MQTT connect as {username} failed")
        yield s
    finally:
        client.on_disconnect = None
        client.disconnect()
        client.loop_stop()
