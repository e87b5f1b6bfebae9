"""The MQTT connection on its own network thread, handing messages over in batches.

Why not aiomqtt's loop: it reads one packet per readable event (≈10k msg/s here). This thread drives
paho-mqtt's documented external-loop API (`loop_read`/`loop_write`/`loop_misc`) and reads every packet
the socket already holds on each wake-up (bench/: ≈52k msg/s count-only against ≈30k for
`loop_forever`). Messages are acknowledged only when the pipeline says they are durable
(`manual_ack=True`): a PUBACK never precedes the write. Acks are sent from this thread (paho is not
thread-safe), stamped with the connection they belong to, so an ack never reaches a later connection
whose packet ids mean other messages. Each QoS>0 message's receipt time is kept in the client id's
receipt journal (`receipts.py`) until the broker has handled its PUBACK, so a redelivery after a crash or
a lost connection is stamped as the original was.

A PUBACK written to the socket is not yet handled: a connection that dies (a SIGKILL resets it while the
broker's data is unread; a network fault) can take the last PUBACKs with it, and the broker redelivers
their messages, which with no receipt time left were stamped anew: second points (a test that swallows the
worker's last bytes and cuts the connection: +35 per entity). So after each group of PUBACKs the
thread sends a barrier, an UNSUBSCRIBE of a filter it never subscribes (`ACK_BARRIER`): the broker handles
one connection's packets in order, so its UNSUBACK means every PUBACK before it was handled, and only then
do their receipt times go. One barrier is in flight at a time: a round trip per group, not per message.
"""

from __future__ import annotations

import contextlib
import logging
import random
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from ingest_worker.ack_order import AckOrder
from ingest_worker.receipts import ReceiptJournal, Settled, digest
from ingest_worker.session_filters import SessionFilters

log = logging.getLogger(__name__)

RECONNECT_INITIAL_S = 0.5
RECONNECT_MAX_S = 30.0
SELECT_TIMEOUT_S = 0.5
KEEPALIVE_S = 30
MAX_READS_PER_WAKEUP = 2_000
STOP_SETTLE_S = 5.0  # how long `stop` waits for the broker to confirm it handled the last PUBACKs
# Never subscribed by anyone (`$` topics are the broker's, and this one no broker uses): unsubscribing it
# changes nothing, and the UNSUBACK (sent whatever the ACL says under MQTT 3.1.1) is the barrier's answer.
ACK_BARRIER = "$hats/ack-barrier"


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    connection: int
    received_ns: int
    digest: bytes = b""  # of topic and payload, for the receipt journal (QoS>0 MQTT messages only)
    retain: bool = False  # sent from the broker's retained store (a fresh SUBSCRIBE's replay), not forwarded live


@dataclass(frozen=True)
class LinkSettings:
    host: str
    port: int
    username: str
    password: str
    client_id: str
    # (filter, shared): retained topics every replica must see (discovery configs) are not shared.
    filters: Sequence[tuple[str, bool]]
    share_group: str | None = None
    tls: ssl.SSLContext | None = None  # the broker's verifying context (ingest_worker/tls.py); None: plaintext
    # Where the receipt journal lives (the client id's outbox directory); None keeps it in memory only.
    journal_dir: Path | None = None


class MqttLink:
    """Owns the paho client and its thread; everything else talks to it through these methods."""

    def __init__(self, settings: LinkSettings, on_batch: Callable[[], None]) -> None:
        self._settings = settings
        self._on_batch = on_batch
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                                   clean_session=False, manual_ack=True)
        self._client.username_pw_set(settings.username, settings.password)
        if settings.tls is not None:
            self._client.tls_set_context(settings.tls)
        self._client.on_message = self._on_message
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_unsubscribe = self._on_unsubscribe
        self._awaiting_subacks: set[int] = set()
        self._subscribing: dict[int, str] = {}  # SUBSCRIBE packet id → the filter it asked for
        # When the broker last confirmed every subscription (monotonic); None while it has not.
        self.subscribed_at: float | None = None
        # The same instant on the clock of `Incoming.received_ns`, to tell which messages came after it.
        self.subscribed_ns: int | None = None
        self._refused: set[str] = set()  # filters the broker answered with a failure code
        self._confirmed: set[str] = set()  # filters the broker granted on this connection
        # What the client id's session held when this connection resumed it (as subscribed, `$share/…`
        # included): held already, so ready before their SUBACKs (session_filters.py).
        self._session = SessionFilters(settings.journal_dir)
        self._resumed: set[str] = set()
        self._unsubscribing: dict[int, str] = {}  # UNSUBSCRIBE packet id → the filter it removes
        self._removing: set[str] = set()  # asked to remove, no UNSUBACK yet (guarded by _lock)
        self._lock = threading.Lock()
        self._inbox: list[Incoming] = []
        self._acks: deque[tuple[Sequence[Incoming], Sequence[Sequence[Incoming]]]] = deque()
        self._subscribe: deque[tuple[str, bool]] = deque()
        self._unsubscribe: deque[str] = deque()
        self._subscriptions: dict[str, bool] = dict(settings.filters)
        self._connection = 0
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._reading = threading.Event()
        self._reading.set()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="mqtt-link", daemon=True)
        self.receipts = ReceiptJournal(settings.journal_dir)
        self._acks_unsent: list[Settled] = []  # handed to paho since the last barrier was sent
        self._order: AckOrder[Incoming] = AckOrder()  # this connection's unacknowledged messages (ack_order.py)
        self._barrier: tuple[int, list[Settled]] | None = None  # the barrier in flight, the PUBACKs it confirms
        self.reconnects = 0

    # -- called from the asyncio side -------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def take(self) -> list[Incoming]:
        with self._lock:
            batch, self._inbox = self._inbox, []
        return batch

    def inbox_depth(self) -> int:
        with self._lock:
            return len(self._inbox)

    def ack(self, messages: Sequence[Incoming], groups: Sequence[Sequence[Incoming]] = ()) -> None:
        """Acknowledge `messages`, and each of `groups` in its order: a group's later messages only once its
        first one's PUBACK has gone (a held state and what arrived for it: `ack_order.py`). A message of an
        earlier connection is skipped: the broker redelivers it on the new one, whose ids mean other messages."""
        self._acks.append((messages, groups))
        self._wake()

    def persist(self, messages: Sequence[Incoming]) -> None:
        """Journal the receipt times of a batch before its write becomes durable (see `receipts.py`)."""
        self.receipts.persist([(m.digest, m.received_ns) for m in messages if m.digest])

    def add_subscription(self, topic_filter: str, shared: bool = True) -> None:
        self._subscribe.append((topic_filter, shared))
        self._wake()

    def remove_subscription(self, topic_filter: str) -> None:
        with self._lock:
            self._removing.add(topic_filter)
        self._unsubscribe.append(topic_filter)
        self._wake()

    def pause_reading(self) -> None:
        """Stop taking packets off the socket: the broker then queues for us (backpressure)."""
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()
        self._wake()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def connection(self) -> int:
        """The number of the current (or last) connection, as stamped on its messages."""
        return self._connection

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def confirmed(self, filters: Sequence[str]) -> bool:
        """Whether the broker has granted every one of `filters` on the current connection (a home added at
        run time is served only from then on: before, its messages could reach a session without them)."""
        granted, resumed = self._confirmed, self._resumed
        return self.connected and all(
            f in granted or self._shared(f, self._subscriptions.get(f, True)) in resumed for f in filters)

    def removing(self, filters: Sequence[str]) -> bool:
        """Whether any of `filters` is still being unsubscribed (asked for, no UNSUBACK yet)."""
        with self._lock:
            return any(f in self._removing for f in filters)

    @property
    def refused(self) -> tuple[str, ...]:
        """Filters the broker refused (an ACL that does not cover them): their messages never arrive."""
        return tuple(sorted(set(self._refused)))

    def stop(self, timeout: float = 10.0) -> None:
        """Send the acks still queued, wait for the broker to have handled them, then disconnect; the broker
        keeps the session for next time."""
        self._stop.set()
        self._wake()
        self._thread.join(timeout)
        self._wake_r.close()
        self._wake_w.close()
        self.receipts.close()

    # -- the network thread ------------------------------------------------------------------------
    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _run(self) -> None:
        delay = RECONNECT_INITIAL_S
        while not self._stop.is_set():
            try:
                self._client.connect(self._settings.host, self._settings.port, keepalive=KEEPALIVE_S)
            except OSError as exc:
                wait = delay * random.uniform(0.5, 1.5)  # noqa: S311 (jitter)
                log.warning("MQTT broker %s:%s unreachable (%s); retrying in %.1f s", self._settings.host,
                            self._settings.port, exc, wait)
                self._stop.wait(wait)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            delay = RECONNECT_INITIAL_S
            try:
                self._serve()
            except Exception:  # this thread must never die: a dead network loop would never reconnect
                log.exception("MQTT network loop failed; reconnecting")
            if not self._stop.is_set():
                self.reconnects += 1
                self._stop.wait(delay * random.uniform(0.5, 1.5))  # noqa: S311
        with contextlib.suppress(Exception):
            self._flush_acks()
            self._settle()
            self._client.disconnect()
            self._client.loop_write()

    def _settle(self) -> None:
        """Before a DISCONNECT: wait, up to `STOP_SETTLE_S`, for a barrier behind the last PUBACKs. paho closes
        the socket as soon as the DISCONNECT is written, and a socket closed with the broker's data unread is
        reset: the broker then drops what it had not read yet (measured: 584–1,083 of 1,846 PUBACKs written at
        a stop came back as redeliveries)."""
        client, deadline = self._client, time.monotonic() + STOP_SETTLE_S
        while (self._acks_unsent or self._barrier is not None) and time.monotonic() < deadline:
            self._send_barrier()
            sock = client.socket()
            if sock is None or sock.fileno() < 0:
                return
            try:
                readable, _, _ = select.select([sock], [sock] if client.want_write() else [], [], SELECT_TIMEOUT_S)
            except (ValueError, OSError):
                return
            if client.loop_write() != mqtt.MQTT_ERR_SUCCESS:
                return
            # What arrives meanwhile is never acknowledged (the pipeline is done): the broker resends it.
            if readable and client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
                return

    def _send_barrier(self) -> None:
        if self._acks_unsent and self._barrier is None:
            _, mid = self._client.unsubscribe(ACK_BARRIER)  # queued behind the PUBACKs: written after them
            if mid is not None:
                self._barrier = (mid, self._acks_unsent)
                self._acks_unsent = []

    def _serve(self) -> None:
        """Drive one connection until it drops or we stop."""
        client = self._client
        while not self._stop.is_set():
            self._flush_requests()
            # Taken after the acks and requests: paho closes the socket (fileno -1) when a write fails,
            # and select() on a closed socket raises instead of reporting the lost connection.
            sock = client.socket()
            if sock is None or sock.fileno() < 0:
                return
            watch_read = [sock, self._wake_r] if self._reading.is_set() else [self._wake_r]
            try:
                readable, writable, _ = select.select(watch_read, [sock] if client.want_write() else [], [],
                                                      SELECT_TIMEOUT_S)
            except (ValueError, OSError):  # closed between the check and the call: the connection is gone
                return
            if self._wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    self._wake_r.recv(4096)
            if sock in readable and self._read_all(cast(socket.socket, sock)) != mqtt.MQTT_ERR_SUCCESS:
                return
            if (writable or client.want_write()) and client.loop_write() != mqtt.MQTT_ERR_SUCCESS:
                return
            self._session.flush()
            if client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                return

    def _read_all(self, sock: socket.socket) -> int:
        before = len(self._inbox)
        rc = mqtt.MQTT_ERR_SUCCESS
        for _ in range(MAX_READS_PER_WAKEUP):
            rc = self._client.loop_read()
            if rc != mqtt.MQTT_ERR_SUCCESS or not select.select([sock], [], [], 0)[0]:
                break
        if len(self._inbox) != before:
            self._on_batch()
        return rc

    def _flush_requests(self) -> None:
        self._flush_acks()
        self._send_barrier()
        client = self._client
        while self._subscribe:
            topic_filter, shared = self._subscribe.popleft()
            self._subscriptions[topic_filter] = shared
            _, mid = client.subscribe(self._shared(topic_filter, shared), qos=1)
            if mid is not None:
                self._subscribing[mid] = topic_filter
        while self._unsubscribe:
            topic_filter = self._unsubscribe.popleft()
            shared = self._subscriptions.pop(topic_filter, True)
            self._refused.discard(topic_filter)
            self._confirmed.discard(topic_filter)
            self._resumed.discard(self._shared(topic_filter, shared))
            self._session.removed(self._shared(topic_filter, shared))  # asked to go: no longer claimed as held
            _, mid = client.unsubscribe(self._shared(topic_filter, shared))
            if mid is not None:
                self._unsubscribing[mid] = topic_filter
            else:  # not connected: the next connection never subscribes it
                self._removed(topic_filter)

    def _flush_acks(self) -> None:
        # The order knows only the current connection's messages: one of an earlier connection sends nothing.
        while self._acks:
            messages, groups = self._acks.popleft()
            for asked in messages:
                if asked.qos:
                    self._send_acks(self._order.ack(asked))
            for group in groups:
                if group:
                    self._send_acks(self._order.ack(group[0], [m for m in group[1:] if m.qos]))

    def _send_acks(self, ready: Sequence[Incoming]) -> None:
        for message in ready:
            self._client.ack(message.mid, message.qos)
            self._acks_unsent.append((message.digest, (message.connection, message.mid, message.received_ns)))

    def _shared(self, topic_filter: str, shared: bool) -> str:
        group = self._settings.share_group
        return f"$share/{group}/{topic_filter}" if group and shared else topic_filter

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: ReasonCode,
                    props: object) -> None:
        if rc.is_failure:
            log.error("MQTT broker refused the connection: %s (check HATS_MQTT_USERNAME/PASSWORD)", rc)
            return
        self._connection += 1
        # Not known to be handled: the broker resends those it did not handle, which take over the entries,
        # and the first new message after the resends shows the rest were handled (`receipts.py`).
        self._acks_unsent = []
        self._barrier = None
        self._order = AckOrder()
        # The persistent session keeps subscriptions, but a broker that lost its state would not.
        self._subscribed.clear()
        self.subscribed_at = None
        self.subscribed_ns = None
        self._awaiting_subacks = set()
        self._subscribing = {}
        self._refused = set()
        self._confirmed = set()
        if getattr(flags, "session_present", False):
            self._resumed = set(self._session.held())
        else:
            self._session.new_session()
            self._resumed = set()
        self._connected.set()  # after the state above: readiness never sees the last connection's grants
        for topic_filter in self._unsubscribing.values():
            self._removed(topic_filter)  # a new connection re-subscribes only what is still wanted
        self._unsubscribing = {}
        for topic_filter, shared in list(self._subscriptions.items()):
            _, mid = client.subscribe(self._shared(topic_filter, shared), qos=1)
            if mid is not None:
                self._awaiting_subacks.add(mid)
                self._subscribing[mid] = topic_filter
        log.info("connected to %s:%s as %s, subscribing to %s%s", self._settings.host, self._settings.port,
                 self._settings.client_id, ", ".join(self._shared(f, s) for f, s in self._settings.filters),
                 f" (resumed a session granted {len(self._resumed)} filter(s) before)" if self._resumed else "")

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, codes: list[ReasonCode],
                      props: object) -> None:
        """Ready only once the broker has confirmed every subscription (or the resumed session held it
        already, `session_filters.py`): before that, a publisher's messages could reach a session that does
        not yet hold the subscription, and be lost. A refused one (its SUBACK carries a failure code) keeps
        the worker unready until it is fixed; the grants are recorded for the next process."""
        topic_filter = self._subscribing.pop(mid, None)
        if topic_filter is not None:
            subscribed = self._shared(topic_filter, self._subscriptions.get(topic_filter, True))
            if any(code.is_failure for code in codes):
                self._refused.add(topic_filter)
                self._resumed.discard(subscribed)
                self._session.removed(subscribed)
                log.error("the broker refused the subscription to %s (%s): the MQTT account %s may not read "
                          "it; extend its ACL or change the topic settings", topic_filter,
                          ", ".join(str(code) for code in codes), self._settings.username)
            else:
                self._refused.discard(topic_filter)
                self._confirmed.add(topic_filter)
                self._session.granted(subscribed)
        self._awaiting_subacks.discard(mid)
        if not self._awaiting_subacks and not self._subscribed.is_set():
            self.subscribed_ns = time.time_ns()
            self.subscribed_at = time.monotonic()
            self._subscribed.set()
            if self._refused:
                log.error("subscriptions answered by the broker; refused: %s", ", ".join(sorted(self._refused)))
            else:
                log.info("subscriptions confirmed by the broker")

    def _on_unsubscribe(self, client: mqtt.Client, userdata: object, mid: int, codes: object,
                        props: object) -> None:
        if self._barrier is not None and mid == self._barrier[0]:
            # The broker handled every PUBACK written before the barrier: their messages are never redelivered.
            self.receipts.settled(self._barrier[1])
            self._barrier = None
            return
        topic_filter = self._unsubscribing.pop(mid, None)
        if topic_filter is not None:
            self._removed(topic_filter)

    def _removed(self, topic_filter: str) -> None:
        with self._lock:
            self._removing.discard(topic_filter)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, rc: ReasonCode,
                       props: object) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("MQTT connection lost (%s); reconnecting", rc)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        topic, payload, now_ns = message.topic, bytes(message.payload), time.time_ns()
        if message.qos == 0:
            item = Incoming(topic, payload, message.mid, 0, self._connection, now_ns, retain=message.retain)
        else:
            key = digest(topic, payload)
            received_ns = self.receipts.received(key, self._connection, message.mid, message.dup, now_ns)
            item = Incoming(topic, payload, message.mid, message.qos, self._connection, received_ns, key,
                            message.retain)
            if self._order.received(item) and self._order.collisions == 1:
                log.warning("the broker reuses the packet id %d of a message not yet acknowledged (Mosquitto "
                            "before 2.0.13 does under a backlog): acknowledging in its order so each PUBACK "
                            "names the message it is meant for; upgrade the broker to end this", message.mid)
        with self._lock:
            self._inbox.append(item)
