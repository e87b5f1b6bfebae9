"""The thin shell around the simulation: publish its messages to Mosquitto at QoS 1 — first the retained
announcements, then a backfill of history as fast as the broker (or `--rate`) allows, then live
traffic paced by the wall clock (compressed by `--speed`) — with progress and a summary on stderr.
"""

from __future__ import annotations

import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from ha_simulator.const import LIVE_TICK_S, PACER_BURST_S, PACER_MIN_SLEEP_S, PROGRESS_EVERY_S
from ha_simulator.models import HOUR_S, US_PER_S
from ha_simulator.simulation import Simulation, SimulationConfig, from_us, to_us
from ha_simulator.stats import Stats

# paho scans its in-flight messages on every PUBACK (`_update_inflight`), so a large in-flight window costs
# O(window) per message: measured on the test broker, 1000 in flight gave ~8.5k msg/s, 100 gave ~18k.
MAX_INFLIGHT = 100
# Messages handed to paho but not yet acknowledged (in flight plus paho's own queue); `publish` blocks
# beyond this. paho numbers messages 1..65535 and refuses a number still unacknowledged: far below that.
MAX_UNACKED = 1_000
ACK_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 30
PROGRESS_CHECK_EVERY = 128  # batches between looks at the clock for a progress line


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    username: str
    password: str
    topic: str
    tls: ssl.SSLContext | None = None  # the broker's verifying context (ingest_worker/tls.py); None: plaintext


class PublishRefused(PermissionError):
    """The broker acknowledged a message with a failure code: the account may not publish that topic."""


class Sink(Protocol):
    """Where messages go: the broker (`Publisher`), or nowhere (`NullSink`, to measure generation)."""

    def publish(self, payload: bytes, topic: str | None = None, retain: bool = False) -> None: ...

    def close(self) -> None: ...


class Publisher:
    """A paho client on its own network thread; `publish` blocks only when too many are unacknowledged."""

    def __init__(self, target: Target, client_id: str | None = None, qos: int = 1) -> None:
        """`qos` 0 publishes as Home Assistant's mqtt_eventstream and most device firmwares do by default.
        The client id defaults to the account's name: the broker binds every account but the workers' to
        that id (tenancy/broker.py) and refuses any other."""
        self._qos = qos
        self._username = target.username
        # MQTT 5, so that a PUBACK says when the broker's ACL refused a message (0x87); under 3.1.1 Mosquitto
        # acknowledges and drops it, and a publisher on the wrong account would lose everything silently.
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                   client_id=target.username if client_id is None else client_id)
        self._client.username_pw_set(target.username, target.password)
        if target.tls is not None:
            self._client.tls_set_context(target.tls)
        self._client.max_inflight_messages_set(MAX_INFLIGHT)
        self._client.max_queued_messages_set(0)
        self._topic = target.topic
        self._connected = threading.Event()
        self._client.on_connect = lambda c, u, f, rc, p: self._connected.set() if not rc.is_failure else None
        self._client.on_publish = self._on_publish
        self._acked = 0
        self._refused = 0  # QoS 1 messages the broker acknowledged with a failure code
        self._refusal: ReasonCode | None = None
        self._waiting = False
        self._room = threading.Condition()
        self._client.connect(target.host, target.port, keepalive=KEEPALIVE_S)
        self._client.loop_start()
        if not self._connected.wait(CONNECT_TIMEOUT_S):
            raise ConnectionError(f"MQTT broker {target.host}:{target.port} refused or did not answer "
                                  "(check HATS_MQTT_PUBLISHER_USERNAME/PASSWORD)")
        self.sent = 0

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, rc: ReasonCode, props: object) -> None:
        if rc.is_failure:
            self._refusal = rc
            self._refused += 1
        self._acked += 1  # only this (network) thread writes these
        if self._waiting:
            with self._room:
                self._room.notify()

    def publish(self, payload: bytes, topic: str | None = None, retain: bool = False) -> None:
        """Publish on `topic` (default: the target's topic) at the publisher's QoS (paho reports a QoS 0
        message once it is written to the socket); raises if the broker is gone or refused a message."""
        if self._refused:
            raise PublishRefused(self._refusal_message())
        if self.sent - self._acked >= MAX_UNACKED:  # the lock only when the window is full: it is the hot path
            with self._room:
                self._waiting = True
                try:
                    if not self._room.wait_for(lambda: self.sent - self._acked < MAX_UNACKED,
                                               timeout=ACK_TIMEOUT_S):
                        raise TimeoutError(f"the broker acknowledged nothing for {ACK_TIMEOUT_S:.0f} s; "
                                           "is it overloaded or gone?")
                finally:
                    self._waiting = False
        info = self._client.publish(self._topic if topic is None else topic, payload, qos=self._qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish failed: {mqtt.error_string(info.rc)}")
        self.sent += 1

    def close(self) -> None:
        with self._room:
            self._waiting = True
            if not self._room.wait_for(lambda: self._acked >= self.sent, timeout=ACK_TIMEOUT_S):
                raise TimeoutError(f"{self.sent - self._acked} messages unacknowledged after {ACK_TIMEOUT_S:.0f} s")
        if self._qos == 0:
            self._barrier()
        self._client.disconnect()
        self._client.loop_stop()
        if self._refused:
            raise PublishRefused(self._refusal_message())

    def _barrier(self) -> None:
        """Until the broker has handled every QoS 0 message sent: it answers an UNSUBSCRIBE (of nothing, which
        no ACL refuses) only after the packets before it on the connection. Without it the next connection under
        this client id (the broker binds each account to one) can take over before the broker has read them,
        and the broker drops what was still unread on the old one (seen: 936 of 1,000 events gone)."""
        answered = threading.Event()
        self._client.on_unsubscribe = lambda c, u, mid, codes, p: answered.set()
        result, _ = self._client.unsubscribe(self._topic)
        if result == mqtt.MQTT_ERR_SUCCESS and not answered.wait(ACK_TIMEOUT_S):
            raise TimeoutError(f"the broker did not answer within {ACK_TIMEOUT_S:.0f} s; is it overloaded or gone?")

    def _refusal_message(self) -> str:
        return (f"the broker refused {self._refused} of {self.sent} messages from {self._username!r} "
                f"({self._refusal}): the account may not publish there (a home's accounts write only under its "
                "prefix, and only its Home Assistant account …/config); check HATS_MQTT_PUBLISHER_USERNAME and "
                "the topics")


class NullSink:
    """Discards every message (`--dry-run`): the generation rate without a broker."""

    def __init__(self) -> None:
        self.sent = 0

    def publish(self, payload: bytes, topic: str | None = None, retain: bool = False) -> None:
        self.sent += 1

    def close(self) -> None:
        """Nothing to flush."""


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How a run is paced and when it stops (the simulation itself is `SimulationConfig`)."""

    backfill_hours: float = 0.0
    duration_s: float | None = None  # seconds of live traffic (wall clock); None: until interrupted
    count: int | None = None  # stop right after this many state messages
    rate: float | None = None  # MQTT messages per second, at most
    speed: float = 1.0  # simulated seconds per wall-clock second in live mode
    start: datetime | None = None  # start of the backfill; default: now minus backfill_hours
    progress_every_s: float = PROGRESS_EVERY_S

    def __post_init__(self) -> None:
        if self.backfill_hours < 0:
            raise ValueError("backfill_hours cannot be negative")
        if self.duration_s is not None and self.duration_s < 0:
            raise ValueError("duration_s cannot be negative")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")
        if self.speed <= 0:
            raise ValueError("speed must be positive")


class _Pacer:
    """Caps the publish rate with a token bucket: sleeps when ahead of `rate` (pacing, not synchronisation).
    Idle time earns at most `PACER_BURST_S` of credit, so a quiet live tick never licenses a flood."""

    def __init__(self, rate: float | None) -> None:
        self._rate = rate
        self._free_at = time.monotonic()

    def admit(self, messages: int) -> None:
        if self._rate is None:
            return
        now = time.monotonic()
        self._free_at = max(self._free_at, now - PACER_BURST_S) + messages / self._rate
        ahead = self._free_at - now
        if ahead >= PACER_MIN_SLEEP_S:
            time.sleep(ahead)


class _Run:
    """One run's mutable state: the sink, counters, pacing and progress output."""

    def __init__(self, sink: Sink, simulation: Simulation, options: RunOptions, out: TextIO,
                 stop: threading.Event, on_time: Callable[[datetime], None] | None = None) -> None:
        self.sink = sink
        self.on_time = on_time
        self.stop = stop
        self.simulation = simulation
        self.options = options
        self.out = out
        self.stats = Stats(simulation.entity_ids, simulation.entity_formats)
        self.pacer = _Pacer(options.rate)
        self.started = time.monotonic()
        self._shown = self.started
        self._shown_messages = 0

    def done(self) -> bool:
        """`count` reached, or asked to stop (checked between batches, so the stats match the wire)."""
        return self.stop.is_set() or (self.options.count is not None
                                      and self.stats.state_messages >= self.options.count)

    def announce(self) -> None:
        messages = self.simulation.announce()
        for message in messages:
            self.sink.publish(message.payload, message.topic, message.retain)
        self.stats.record_messages(messages)
        self.pacer.admit(len(messages))

    def publish_until(self, until_us: int, phase: str) -> None:
        """Publish every batch due before `until_us`, or stop right after the `count`-th state message."""
        if self.done():
            return
        sink, stats, pacer = self.sink, self.stats, self.pacer
        for batches, batch in enumerate(self.simulation.batches_until(until_us), start=1):
            for message in batch.messages:
                sink.publish(message.payload, message.topic, message.retain)
            stats.record(batch)
            pacer.admit(len(batch.messages))
            if self.done():
                return
            if batches % PROGRESS_CHECK_EVERY == 0:
                self.progress(phase)

    def progress(self, phase: str) -> None:
        if self.on_time is not None:
            self.on_time(from_us(self.simulation.now_us))
        now = time.monotonic()
        if now - self._shown < self.options.progress_every_s:
            return
        rate = (self.stats.mqtt_messages - self._shown_messages) / (now - self._shown)
        self._shown, self._shown_messages = now, self.stats.mqtt_messages
        print(f"simulator: {phase}: {self.stats.state_messages} state messages, {self.stats.mqtt_messages} MQTT "
              f"messages, {rate:.0f} msg/s, simulated time {from_us(self.simulation.now_us):%Y-%m-%d %H:%M:%S}",
              file=self.out, flush=True)


def run(sink: Sink, config: SimulationConfig, options: RunOptions, out: TextIO | None = None,
        stop: threading.Event | None = None, on_time: Callable[[datetime], None] | None = None) -> Stats:
    """Publish the fleet to `sink`: retained announcements, `backfill_hours` of history, then live traffic
    for `duration_s` (or until `count` state messages, or until `stop` is set). Returns exactly what was
    published. `on_time` hears the simulated clock as publishing goes on (a capped `rate` makes it lag
    the wall clock × `speed`): what a caller scheduling work by simulated hours follows.

    The line `simulator: backfilled {hours} h with {N} messages from {devices} devices` (N = state
    messages of the backfill) is what `hats run` parses: keep its format, and no later line may
    contain " with "."""
    out = sys.stderr if out is None else out  # looked up per call: a test's captured stderr counts
    wall_start = time.monotonic()
    backfill = timedelta(hours=options.backfill_hours)
    start = options.start if options.start is not None else datetime.now(UTC) - backfill
    simulation = Simulation(config, start)
    stop = threading.Event() if stop is None else stop
    state = _Run(sink, simulation, options, out, stop, on_time)
    stats = state.stats
    backfill_end_us = to_us(start.astimezone(UTC) + backfill)
    try:
        try:
            state.announce()
            state.publish_until(backfill_end_us, "backfill")
            stats.backfill_state_messages = stats.state_messages
            cut_short = ""
            if state.done():
                covered_h = (simulation.now_us - simulation.start_us) / (HOUR_S * US_PER_S)
                cut_short = f" (stopped after {covered_h:.2f} h)"
            print(f"simulator: backfilled {options.backfill_hours} h with {stats.state_messages} messages "
                  f"from {config.devices} devices{cut_short}", file=out, flush=True)
            # Live: simulated time follows the wall clock from the run's start (the backfill's own duration
            # is caught up at once), `speed` times faster.
            live_start = time.monotonic()
            while not state.done() and (options.duration_s is None
                                      or time.monotonic() - live_start < options.duration_s):
                elapsed_us = int((time.monotonic() - wall_start) * options.speed * US_PER_S)
                state.publish_until(backfill_end_us + elapsed_us, "live")
                state.progress("live")
                if not state.done():
                    time.sleep(LIVE_TICK_S)  # pacing of a live fleet, not synchronisation
        except KeyboardInterrupt:  # a second Ctrl-C (see __main__): stop at once, still drain and report
            stop.set()
        stats.interrupted = stop.is_set()
    finally:
        sink.close()
        stats.meter_resets = simulation.meter_resets
        stats.elapsed_s = time.monotonic() - wall_start
        simulated_h = (simulation.now_us - simulation.start_us) / (HOUR_S * US_PER_S)
        print(f"simulator: done: {stats.state_messages} state messages ({stats.points} values, "
              f"{stats.unavailable} unavailable, {stats.late} late, {stats.out_of_order} out of order), "
              f"{stats.mqtt_messages} MQTT messages in {stats.elapsed_s:.1f} s, {simulated_h:.2f} h simulated, "
              f"per format {stats.by_format}", file=out, flush=True)
    return stats
