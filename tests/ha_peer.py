"""A real Home Assistant as the tests' peer, per version, started and provisioned by devstack.

`home_assistant` is session-scoped and parametrised over the supported versions, so pytest runs every
test that uses it once per version, with one instance alive at a time. It installs on first use
(minutes, with progress lines; cached in /opt/hats afterwards). Each session publishes under a fresh
`hats/<id>/homeassistant/...` namespace; `ha_tenant` is a test tenant whose worker reads exactly that.
Its MQTT birth message (`homeassistant/status`) and discovery subscription (`homeassistant/#`) stay at
the broker's root, as the MQTT entry was created once for every session.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from devstack.home_assistant.install import Progress
from devstack.home_assistant.peer import HomeAssistantPeer
from devstack.home_assistant.provision import Broker
from devstack.profile import LOOPBACK, Profile
from tests.conftest import Tenant

HA_VERSIONS = {"2024.3.3": "ha2024.3", "2025.4.4": "ha2025.4"}


class HaPeer(HomeAssistantPeer):
    """The running Home Assistant: its address and token, and the calls tests make on it."""

    @property
    def url(self) -> str:
        return self.api.url

    @property
    def token(self) -> str:
        return self.api.token

    def set_state(self, entity_id: str, state: str, attributes: dict[str, Any] | None = None) -> dict[str, Any]:
        """`POST /api/states/<entity_id>`: a state (and attributes) for an entity no integration owns."""
        return self.api.set_state(entity_id, state, attributes)

    def set_number(self, entity_id: str, value: float) -> None:
        """`input_number.set_value`; the template sensor of devstack.home_assistant.config follows it."""
        self.api.set_number(entity_id, value)

    def call_service(self, domain: str, service: str, data: dict[str, Any] | None = None) -> Any:
        return self.api.call_service(domain, service, data)

    def history(self, entity_ids: Iterable[str], start: datetime, end: datetime) -> dict[str, list[dict[str, Any]]]:
        """HA's own history (`/api/history/period`, minimal, no attributes, every change): the reference."""
        return self.api.history(entity_ids, start, end)

    def statistics_during_period(self, statistic_ids: Iterable[str], start: datetime, end: datetime | None = None,
                                 period: str = "hour", types: Iterable[str] | None = None) -> dict[str, Any]:
        return self.api.statistics_during_period(statistic_ids, start, end, period, types)

    def ws_call(self, command: str, **payload: Any) -> Any:
        return self.api.ws_call(command, **payload)

    def state(self, entity_id: str) -> dict[str, Any] | None:
        return self.api.state(entity_id)


def _progress(config: pytest.Config) -> Progress:
    """Progress lines on the terminal even while pytest captures output (a first install takes minutes)."""
    capture = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")

    def say(message: str) -> None:
        if capture is None or reporter is None:
            print(f"[home assistant] {message}")
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[home assistant] {message}")
    return say


def start_peer(version: str, profile: Profile, stack_env: dict[str, str], progress: Progress) -> HaPeer:
    port = int(stack_env["HATS_MQTT_PORT"])
    ca = Path(stack_env["HATS_MQTT_CA_FILE"])
    peer = HaPeer(
        version=version,
        state_root=profile.path("homeassistant"),
        broker=Broker(LOOPBACK, port, stack_env["HATS_MQTT_HOMEASSISTANT_USERNAME"],
                      stack_env["HATS_MQTT_HOMEASSISTANT_PASSWORD"], ca),
        listener=Broker(LOOPBACK, port, stack_env["HATS_MQTT_USERNAME"], stack_env["HATS_MQTT_PASSWORD"], ca),
        progress=progress,
    )
    try:
        peer.start()
    except BaseException:
        peer.close()
        raise
    return peer


@pytest.fixture(scope="session", params=list(HA_VERSIONS), ids=list(HA_VERSIONS.values()))
def home_assistant(request: pytest.FixtureRequest, profile: Profile, stack_env: dict[str, str]) -> Iterator[HaPeer]:
    """A provisioned Home Assistant of each supported version, publishing statestream and eventstream."""
    peer = start_peer(request.param, profile, stack_env, _progress(request.config))
    yield peer
    peer.close()


def tenant_for(peer: HomeAssistantPeer, tenant: Tenant) -> Tenant:
    """`tenant`, re-pointed at what `peer` publishes: the worker started with its env reads Home Assistant."""
    env = {**tenant.env,
           "HATS_TOPIC_PREFIX": peer.topic_prefix,
           "HATS_STATESTREAM_BASE": peer.statestream_base.removeprefix(peer.topic_prefix),
           "HATS_EVENTSTREAM_TOPIC": peer.eventstream_topic.removeprefix(peer.topic_prefix)}
    return dataclasses.replace(tenant, topic=peer.eventstream_topic, env=env)


@pytest.fixture
def ha_tenant(tenant: Tenant, home_assistant: HaPeer) -> Tenant:
    return tenant_for(home_assistant, tenant)

