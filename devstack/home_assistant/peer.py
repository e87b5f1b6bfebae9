"""One real Home Assistant for a test session: installed, configured, started, provisioned, verified.

Its config folder is a numbered slot under the stack's state (`homeassistant/<version>/slot-N`), held
with a file lock for the session, so two sessions on one clone never share an instance, and a later
session reuses an onboarded slot (token in its state file, MQTT entry in HA's storage) without
onboarding or restarting again. Every start writes a fresh topic namespace (`hats/<id>/homeassistant/…`),
so nothing retained by an earlier run is mistaken for this one's messages.
"""

from __future__ import annotations

import fcntl
import itertools
import queue
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devstack.home_assistant import config, install, provision
from devstack.home_assistant.api import HomeAssistantApi, HomeAssistantApiError
from devstack.home_assistant.install import Progress
from devstack.home_assistant.process import HassProcess
from devstack.home_assistant.provision import Broker
from devstack.procs import free_port

RUNNING_TIMEOUT_S = 60.0
VERIFY_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.2
MAX_SLOTS = 16
PROBE_NUMBER = config.NUMBERS[0]
SETTLING_STATES = ("not_loaded", "setup_in_progress")


@dataclass
class HomeAssistantPeer:
    """A Home Assistant `version` publishing to `broker` (its own account); `listener` may read the broker."""

    version: str
    state_root: Path
    broker: Broker
    listener: Broker
    progress: Progress
    topic_prefix: str = field(default_factory=lambda: f"hats/ha{uuid.uuid4().hex[:10]}/")
    timings: dict[str, float] = field(default_factory=dict)
    _slot: Path | None = None
    _lock: IO[str] | None = None
    _process: HassProcess | None = None
    _api: HomeAssistantApi | None = None

    @property
    def statestream_base(self) -> str:
        return f"{self.topic_prefix}homeassistant/statestream"

    @property
    def eventstream_topic(self) -> str:
        return f"{self.topic_prefix}homeassistant/events"

    @property
    def config_dir(self) -> Path:
        assert self._slot is not None, "start() first"
        return self._slot / "config"

    @property
    def api(self) -> HomeAssistantApi:
        assert self._api is not None, "start() first"
        return self._api

    @property
    def process(self) -> HassProcess:
        assert self._process is not None, "start() first"
        return self._process

    def start(self) -> None:
        """Install (cached), start, provision on first use, and prove statestream publishes."""
        started = time.monotonic()
        installation = install.ensure(self.version, config.domains(), self.progress)
        self.timings["install_s"] = time.monotonic() - started
        self._claim_slot()
        self._process = HassProcess(installation, self.config_dir, free_port())
        self._process.stop()  # one that a crashed session left running in this slot
        config.write(self.config_dir, self._process.port, self.statestream_base, self.eventstream_topic)
        self.progress(f"starting Home Assistant {self.version} in {self.config_dir}")
        self.timings["start_s"] = self._process.start()
        provisioning = time.monotonic()
        self._api = HomeAssistantApi(self._process.url, provision.ensure_token(self._process.url, self._state_file))
        self._wait_running()
        entry = self._settled_mqtt_entry()
        if entry is None or entry.get("state") != "loaded" or not provision.entry_matches(self.config_dir, self.broker):
            self.progress("creating the MQTT config entry; restarting (statestream/eventstream need it at boot)")
            provision.create_mqtt_entry(self._api, self.broker)
            provision.remove_onboarding_entries(self._api)
            self.timings["provision_s"] = time.monotonic() - provisioning
            self.restart()
        self._wait_running()
        provision.keep_units(self._api, {n.sensor_entity: n.unit for n in config.NUMBERS if n.unit})
        self.verify_statestream()
        self.timings["ready_s"] = time.monotonic() - started
        self.progress(f"Home Assistant {self.version} ready on {self._process.url} "
                      f"({', '.join(f'{k} {v:.1f}' for k, v in self.timings.items())})")

    def restart(self) -> None:
        self.process.stop()
        self.timings["restart_s"] = self.process.start()
        self._wait_running()

    def stop(self) -> None:
        """Stop Home Assistant (SIGTERM, SIGKILL after a bound); `restart()` brings it back."""
        if self._process is not None:
            self._process.stop()

    def close(self) -> None:
        """Stop it and give up the slot (the end of a session)."""
        self.stop()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def rss_bytes(self) -> int:
        """Resident memory of the running `hass` process."""
        pid = self.process.pid()
        assert pid is not None, "Home Assistant is not running"
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def verify_statestream(self) -> None:
        """Set a value and see statestream publish it on the broker (as the reading account)."""
        received: queue.Queue[tuple[str, bytes]] = queue.Queue()
        subscribed: queue.Queue[bool] = queue.Queue()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hats-ha-verify-{uuid.uuid4().hex[:8]}")
        client.username_pw_set(self.listener.username, self.listener.password)
        if (tls := self.listener.tls()) is not None:
            client.tls_set_context(tls)
        client.on_message = lambda _c, _u, message: received.put((message.topic, bytes(message.payload)))
        client.on_subscribe = lambda *_args: subscribed.put(True)
        client.connect(self.listener.host, self.listener.port)
        client.loop_start()
        try:
            topic = f"{self.statestream_base}/sensor/{PROBE_NUMBER.key}/state"
            client.subscribe(topic, qos=1)
            subscribed.get(timeout=VERIFY_TIMEOUT_S)
            current = (self.api.state(PROBE_NUMBER.input_entity) or {}).get("state")
            value = next(v for v in (20.1, 20.2) if str(v) != current)
            self.api.set_number(PROBE_NUMBER.input_entity, value)
            deadline = time.monotonic() + VERIFY_TIMEOUT_S
            while time.monotonic() < deadline:
                try:
                    seen = received.get(timeout=max(deadline - time.monotonic(), 0.01))
                except queue.Empty:
                    break
                if seen == (topic, str(value).encode()):
                    return
            raise HomeAssistantApiError(f"statestream did not publish {value} on {topic} within "
                                        f"{VERIFY_TIMEOUT_S:.0f} s{self.process.tail()}")
        finally:
            client.loop_stop()
            client.disconnect()

    @property
    def _state_file(self) -> Path:
        assert self._slot is not None
        return self._slot / "state.json"

    def _claim_slot(self) -> None:
        base = self.state_root / self.version
        base.mkdir(parents=True, exist_ok=True)
        for number in itertools.count():
            if number >= MAX_SLOTS:
                raise HomeAssistantApiError(f"all {MAX_SLOTS} Home Assistant slots in {base} are in use")
            handle = (base / f"slot-{number}.lock").open("a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self._lock, self._slot = handle, base / f"slot-{number}"
            return

    def _settled_mqtt_entry(self) -> dict[str, Any] | None:
        """The MQTT entry once its setup has finished (HA may answer before it has)."""
        deadline = time.monotonic() + RUNNING_TIMEOUT_S
        while True:
            entry = provision.mqtt_entry(self.api)
            if entry is None or entry.get("state") not in SETTLING_STATES or time.monotonic() > deadline:
                return entry
            time.sleep(POLL_INTERVAL_S)

    def _wait_running(self) -> None:
        deadline = time.monotonic() + RUNNING_TIMEOUT_S
        while True:
            found: dict[str, Any] = self.api.config()
            if found.get("state") == "RUNNING":
                return
            if time.monotonic() > deadline:
                raise HomeAssistantApiError(f"Home Assistant stayed {found.get('state')}{self.process.tail()}")
            time.sleep(POLL_INTERVAL_S)
