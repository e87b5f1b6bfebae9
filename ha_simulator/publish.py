"""Publish the fleet's states to Mosquitto at QoS 1: first a backfill of history, then live."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ha_simulator.fleet import build_fleet, states_until
from ha_simulator.messages import state_changed

PROGRESS_EVERY_S = 5.0
MAX_INFLIGHT = 1000
# paho numbers messages 1..65535 and refuses a number still unacknowledged: stay well below that.
MAX_UNACKED = 20_000


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    username: str
    password: str
    topic: str


class Publisher:
    """A paho client on its own network thread; `publish` blocks only when too many are unacknowledged."""

    def __init__(self, target: Target, client_id: str) -> None:
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.username_pw_set(target.username, target.password)
        self._client.max_inflight_messages_set(MAX_INFLIGHT)
        self._client.max_queued_messages_set(0)
        self._topic = target.topic
        self._connected = threading.Event()
        self._client.on_connect = lambda c, u, f, rc, p: self._connected.set() if not rc.is_failure else None
        self._client.on_publish = self._on_publish
        self._acked = 0
        self._room = threading.Condition()
        self._client.connect(target.host, target.port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(10):
            raise ConnectionError(f"MQTT broker {target.host}:{target.port} refused or did not answer "
                                  "(check HATS_MQTT_PUBLISHER_USERNAME/PASSWORD)")
        self.sent = 0

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, rc: object, props: object) -> None:
        with self._room:
            self._acked += 1
            self._room.notify()

    def publish(self, payload: bytes) -> None:
        with self._room:
            if not self._room.wait_for(lambda: self.sent - self._acked < MAX_UNACKED, timeout=60):
                raise TimeoutError("the broker acknowledged nothing for 60 s; is it overloaded or gone?")
        info = self._client.publish(self._topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish failed: {mqtt.error_string(info.rc)}")
        self.sent += 1

    def close(self) -> None:
        with self._room:
            if not self._room.wait_for(lambda: self._acked >= self.sent, timeout=60):
                raise TimeoutError(f"{self.sent - self._acked} messages unacknowledged after 60 s")
        self._client.disconnect()
        self._client.loop_stop()


def run(target: Target, devices: int, seed: int, backfill_hours: float, duration_s: float | None,
        speed: float = 1.0) -> int:
    """Publish `backfill_hours` of history as fast as the broker takes it, then live until `duration_s`."""
    now = datetime.now(UTC)
    fleet = build_fleet(devices, seed, now - timedelta(hours=backfill_hours))
    publisher = Publisher(target, client_id=f"hats-simulator-{seed}")
    try:
        shown = time.monotonic()
        for device, at, state in states_until(fleet, now):
            publisher.publish(state_changed(device, at, state))
            if time.monotonic() - shown >= PROGRESS_EVERY_S:
                print(f"simulator: backfill at {at:%H:%M:%S}, {publisher.sent} messages", file=sys.stderr)
                shown = time.monotonic()
        print(f"simulator: backfilled {backfill_hours} h with {publisher.sent} messages from {devices} devices",
              file=sys.stderr)
        started = time.monotonic()
        sim_start = now
        while duration_s is None or time.monotonic() - started < duration_s:
            sim_now = sim_start + timedelta(seconds=(time.monotonic() - started) * speed)
            for device, at, state in states_until(fleet, sim_now):
                publisher.publish(state_changed(device, at, state))
            time.sleep(0.2)  # pacing of a live fleet, not synchronisation
    finally:
        publisher.close()
    return publisher.sent
