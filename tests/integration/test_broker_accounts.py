"""The homes' broker accounts on the stack's real Mosquitto (dynamic security plugin, tenancy/broker.py):
client ids bound to accounts, each home confined to its prefix, discovery configs only from Home
Assistant's account, changes at run time, disable and removal, and the admin's errors."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from devstack import mosquitto
from devstack.profile import Profile
from ha_simulator.publish import Publisher, PublishRefused, Target
from ingest_worker.tls import mqtt_context
from tenancy.broker import CONFIG_DENY_DEPTH, BrokerAdmin, BrokerAdminError, account_name
from tests.mqtt import connect_code, session

pytestmark = pytest.mark.integration

NOT_AUTHORIZED = 0x87  # MQTT 5: what Mosquitto answers to what an account may not do
SUCCESS, NO_SUBSCRIBERS = 0x00, 0x10  # PUBACK of an accepted message (0x10: nobody subscribed to it)
GRANTED_QOS1 = 0x01
# Accounts the stack itself leaves unbound (devstack/mosquitto.py): workers, the tests' shared Home
# Assistant peer account, and the admin (who may make any account anyway).
UNBOUND_PLATFORM_ACCOUNTS = {"hats_worker", "hats_homeassistant", "hats_broker_admin"}


@dataclass(frozen=True)
class Home:
    tenant_id: str
    prefix: str
    passwords: dict[str, str]

    @property
    def ha(self) -> tuple[str, str]:
        return account_name(self.tenant_id, "ha"), self.passwords["mqtt_homeassistant"]

    @property
    def device(self) -> tuple[str, str]:
        return account_name(self.tenant_id, "device"), self.passwords["mqtt_device"]


MakeHome = Callable[[], Home]


def admin_for(env: dict[str, str], password: str | None = None) -> BrokerAdmin:
    return BrokerAdmin(env["HATS_MQTT_HOST"], int(env["HATS_MQTT_PORT"]), env["HATS_BROKER_ADMIN_USERNAME"],
                       env["HATS_BROKER_ADMIN_PASSWORD"] if password is None else password, tls=mqtt_context(env))


@pytest.fixture
def admin(stack_env: dict[str, str]) -> Iterator[BrokerAdmin]:
    with admin_for(stack_env) as broker:
        yield broker


@pytest.fixture
def make_home(admin: BrokerAdmin) -> Iterator[MakeHome]:
    made: list[str] = []

    def make() -> Home:
        tenant_id = f"b{uuid.uuid4().hex[:12]}"
        home = Home(tenant_id, f"hats/{tenant_id}/", {"mqtt_homeassistant": secrets.token_urlsafe(24),
                                                      "mqtt_device": secrets.token_urlsafe(24)})
        admin.ensure_home_accounts(home.tenant_id, home.prefix, home.passwords)
        made.append(tenant_id)
        return home

    yield make
    for tenant_id in made:
        admin.remove_home_accounts(tenant_id)


def port_of(env: dict[str, str]) -> int:
    return int(env["HATS_MQTT_PORT"])


def worker_of(env: dict[str, str]) -> tuple[str, str]:
    return env["HATS_MQTT_USERNAME"], env["HATS_MQTT_PASSWORD"]


def test_a_device_cannot_take_the_workers_client_id_and_its_queued_messages_survive(
        stack_env: dict[str, str], make_home: MakeHome) -> None:
    home: Home = make_home()
    port, worker_id = port_of(stack_env), f"hats-test-{home.tenant_id}"
    topic = f"{home.prefix}homeassistant/events"
    # The worker's persistent session (MQTT 3.1.1, as paho connects in ingest_worker), then offline.
    with session(port, *worker_of(stack_env), client_id=worker_id, clean_start=False, v311=True) as w:
        assert w.subscribe(topic).value == GRANTED_QOS1
    payloads = [f"queued-{i}".encode() for i in range(50)]
    with session(port, *home.ha, client_id=home.ha[0]) as ha:
        acks = [ha.publish(topic, payload).value for payload in payloads]
    assert acks == [SUCCESS] * len(payloads)  # the broker holds them for the offline session
    # The takeover: both of the home's accounts, MQTT 5 and 3.1.1, a clean start that would wipe the queue.
    for username, password in (home.device, home.ha):
        assert connect_code(port, username, password, client_id=worker_id).value == NOT_AUTHORIZED
        assert connect_code(port, username, password, client_id=worker_id, v311=True).is_failure
    with session(port, *worker_of(stack_env), client_id=worker_id, clean_start=False, v311=True) as w:
        w.wait(lambda: len(w.received) >= len(payloads), f"{len(payloads)} queued messages")
        assert [m.payload for m in w.received] == payloads
    # Bound the other way too: the home's accounts connect only with their own names.
    assert connect_code(port, *home.device, client_id=f"other-{home.tenant_id}").value == NOT_AUTHORIZED
    assert connect_code(port, *home.device, client_id="").is_failure
    assert not connect_code(port, *home.device, client_id=home.device[0]).is_failure


def test_only_worker_accounts_connect_with_any_client_id(admin: BrokerAdmin, make_home: MakeHome) -> None:
    make_home()
    clients = admin.run([{"command": "listClients", "verbose": True}])[0]["data"]["clients"]
    unbound = {c["username"] for c in clients if not c.get("clientid")}
    bound = {c["username"]: c["clientid"] for c in clients if c.get("clientid")}
    assert unbound <= UNBOUND_PLATFORM_ACCOUNTS
    assert "hats_publisher" in bound
    assert bound == {username: username for username in bound}


def test_a_homes_accounts_cannot_publish_or_subscribe_under_another_homes_prefix(
        stack_env: dict[str, str], make_home: MakeHome) -> None:
    a: Home = make_home()
    b: Home = make_home()
    port = port_of(stack_env)
    with (session(port, *worker_of(stack_env), client_id=f"w-{b.tenant_id}") as w,
          session(port, *a.ha, client_id=a.ha[0]) as ha, session(port, *a.device, client_id=a.device[0]) as dev):
        assert w.subscribe(f"{b.prefix}#").value == GRANTED_QOS1
        for s in (ha, dev):
            assert s.publish(f"{b.prefix}homeassistant/events", b"forged").value == NOT_AUTHORIZED
            assert s.publish(f"{b.prefix}zigbee2mqtt/plug", b"forged").value == NOT_AUTHORIZED
            assert s.publish("homeassistant/events", b"forged").value == NOT_AUTHORIZED  # the demo's topics
            for pattern in (f"{b.prefix}#", f"{b.prefix}zigbee2mqtt/plug/set", "#", "hats/+/#"):
                assert s.subscribe(pattern).value == NOT_AUTHORIZED
        # Its own prefix: the HA account writes and reads it; the message reached home B's reader never.
        assert ha.subscribe(f"{a.prefix}#").value == GRANTED_QOS1
        assert ha.publish(f"{a.prefix}homeassistant/events", b"own").value == SUCCESS
        ha.wait(lambda: len(ha.received) == 1, "its own message")
        with session(port, *b.ha, client_id=b.ha[0]) as other:
            assert other.publish(f"{b.prefix}homeassistant/events", b"b's own").value in (SUCCESS, NO_SUBSCRIBERS)
        w.wait(lambda: len(w.received) == 1, "home B's own message")
        assert [m.payload for m in w.received] == [b"b's own"]


def test_only_home_assistants_account_may_publish_discovery_configs(
        stack_env: dict[str, str], make_home: MakeHome) -> None:
    home: Home = make_home()
    port, p = port_of(stack_env), home.prefix
    configs = [f"{p}homeassistant/sensor/0x00158d0001a2b3c4/temperature/config",  # <component>/<node>/<obj>
               f"{p}homeassistant/binary_sensor/door/config",  # <component>/<object_id>
               f"{p}config", f"{p}{'x/' * CONFIG_DENY_DEPTH}config"]
    with (session(port, *worker_of(stack_env), client_id=f"w-{home.tenant_id}") as w,
          session(port, *home.device, client_id=home.device[0]) as dev,
          session(port, *home.ha, client_id=home.ha[0]) as ha):
        assert w.subscribe(f"{p}#").value == GRANTED_QOS1
        refused = [dev.publish(topic, b'{"state_topic": "elsewhere"}').value for topic in configs]
        assert refused == [NOT_AUTHORIZED] * len(configs)
        # What a device does publish: its state, its availability.
        assert dev.publish(f"{p}zigbee2mqtt/plug", b'{"power": 12.5}').value == SUCCESS
        assert dev.publish(f"{p}zigbee2mqtt/plug/availability", b"online").value == SUCCESS
        # A device subscribes to its commands and Home Assistant's birth, not to the home's other data.
        assert dev.subscribe(f"{p}zigbee2mqtt/plug/set").value == GRANTED_QOS1
        assert dev.subscribe(f"{p}homeassistant/status").value == GRANTED_QOS1
        assert dev.subscribe(f"{p}#").value == NOT_AUTHORIZED
        assert dev.subscribe(f"{p}homeassistant/events").value == NOT_AUTHORIZED
        assert ha.publish(configs[0], b'{"state_topic": "z"}').value == SUCCESS
        w.wait(lambda: len(w.received) == 3, "the device's two messages and Home Assistant's config")
        assert [m.topic for m in w.received] == [f"{p}zigbee2mqtt/plug", f"{p}zigbee2mqtt/plug/availability",
                                                 configs[0]]
        # Home Assistant's commands reach the device.
        assert ha.publish(f"{p}zigbee2mqtt/plug/set", b'{"state": "OFF"}').value == SUCCESS
        dev.wait(lambda: len(dev.received) == 1, "the command")


def test_accounts_made_at_run_time_work_at_once_without_a_broker_restart(
        stack_env: dict[str, str], admin: BrokerAdmin) -> None:
    port, tenant_id = port_of(stack_env), f"b{uuid.uuid4().hex[:12]}"
    passwords = {"mqtt_homeassistant": secrets.token_urlsafe(24), "mqtt_device": secrets.token_urlsafe(24)}
    ha = account_name(tenant_id, "ha")
    # A connection open across the change: a restart (or a reload that drops clients) would disconnect it.
    with session(port, *worker_of(stack_env), client_id=f"w-{tenant_id}") as w:
        assert connect_code(port, ha, passwords["mqtt_homeassistant"], client_id=ha).value == NOT_AUTHORIZED
        try:
            made = admin.ensure_home_accounts(tenant_id, f"hats/{tenant_id}/", passwords)
            assert [(m.system, m.name) for m in made] == [("mqtt", ha), ("mqtt", account_name(tenant_id, "device"))]
            assert w.subscribe(f"hats/{tenant_id}/#").value == GRANTED_QOS1
            with session(port, ha, passwords["mqtt_homeassistant"], client_id=ha) as s:
                assert s.publish(f"hats/{tenant_id}/homeassistant/events", b"new").value == SUCCESS
            w.wait(lambda: len(w.received) == 1, "the new account's message")
            # Idempotent, and a changed prefix re-confines the same accounts at once.
            assert admin.ensure_home_accounts(tenant_id, f"hats/{tenant_id}/", passwords) == made
            admin.ensure_home_accounts(tenant_id, f"hats/{tenant_id}x/", passwords)
            with session(port, ha, passwords["mqtt_homeassistant"], client_id=ha) as s:
                assert s.publish(f"hats/{tenant_id}/homeassistant/events", b"old prefix").value == NOT_AUTHORIZED
                assert s.publish(f"hats/{tenant_id}x/homeassistant/events", b"new prefix").value in (
                    SUCCESS, NO_SUBSCRIBERS)
            assert w.disconnects == []
        finally:
            admin.remove_home_accounts(tenant_id)


def test_a_disabled_home_is_refused_and_cut_off_enabled_again_and_removed(
        stack_env: dict[str, str], admin: BrokerAdmin, make_home: MakeHome) -> None:
    home: Home = make_home()
    port = port_of(stack_env)
    names = [home.ha[0], home.device[0]]
    assert admin.home_account_names(home.tenant_id) == names
    with session(port, *home.ha, client_id=home.ha[0]) as live:
        admin.set_home_accounts_enabled(home.tenant_id, False)
        live.wait(lambda: bool(live.disconnects), "the disabled account's disconnection")
        for username, password in (home.ha, home.device):
            assert connect_code(port, username, password, client_id=username).is_failure
    admin.set_home_accounts_enabled(home.tenant_id, True)
    for username, password in (home.ha, home.device):
        assert not connect_code(port, username, password, client_id=username).is_failure
    assert admin.remove_home_accounts(home.tenant_id) == names
    assert admin.home_account_names(home.tenant_id) == []
    assert admin.client(home.ha[0]) is None
    assert connect_code(port, *home.ha, client_id=home.ha[0]).is_failure
    assert admin.remove_home_accounts(home.tenant_id) == []  # removing twice is no error


def test_a_reader_account_only_reads_its_home(stack_env: dict[str, str], admin: BrokerAdmin,
                                              make_home: MakeHome) -> None:
    home: Home = make_home()
    other: Home = make_home()
    port, password = port_of(stack_env), secrets.token_urlsafe(24)
    account = admin.ensure_reader_account(home.tenant_id, home.prefix, password)
    assert (account.system, account.name) == ("mqtt", f"home_{home.tenant_id}_reader")
    assert admin.home_account_names(home.tenant_id) == [home.ha[0], home.device[0], account.name]
    assert connect_code(port, account.name, password, client_id="hats-ingest").value == NOT_AUTHORIZED
    with session(port, account.name, password, client_id=account.name) as r:
        assert r.subscribe(f"{home.prefix}#").value == GRANTED_QOS1
        assert r.subscribe(f"{other.prefix}#").value == NOT_AUTHORIZED
        assert r.publish(f"{home.prefix}homeassistant/events", b"forged").value == NOT_AUTHORIZED
        with session(port, *home.ha, client_id=home.ha[0]) as ha:
            assert ha.publish(f"{home.prefix}homeassistant/events", b"21.5").value == SUCCESS
        r.wait(lambda: len(r.received) == 1, "the home's message")
        assert [m.payload for m in r.received] == [b"21.5"]


def test_bad_input_and_a_wrong_admin_password_are_clear_errors(stack_env: dict[str, str],
                                                               admin: BrokerAdmin) -> None:
    tenant_id = f"b{uuid.uuid4().hex[:12]}"
    passwords = {"mqtt_homeassistant": "x" * 32, "mqtt_device": "y" * 32}
    with pytest.raises(BrokerAdminError, match="HATS_BROKER_ADMIN_PASSWORD"):
        admin_for(stack_env, "wrong").ensure_home_accounts(tenant_id, f"hats/{tenant_id}/", passwords)
    for prefix in ("", "hats/#/", "hats/acme", "/hats/acme/"):
        with pytest.raises(BrokerAdminError, match="topic_prefix"):
            admin.ensure_home_accounts(tenant_id, prefix, passwords)
    with pytest.raises(BrokerAdminError, match="mqtt_device"):
        admin.ensure_home_accounts(tenant_id, f"hats/{tenant_id}/", {"mqtt_homeassistant": "x" * 32})
    with pytest.raises(BrokerAdminError, match="tenant id"):
        admin.ensure_home_accounts("Bad-Id", "hats/bad/", passwords)
    # Nothing was made by any of them.
    assert admin.home_account_names(tenant_id) == []
    with pytest.raises(BrokerAdminError, match="refused setClientPassword"):
        admin.set_password(f"home_{tenant_id}_ha", "z")


def test_accounts_and_the_admins_connection_outlive_a_broker_restart(
        profile: Profile, stack_env: dict[str, str], secrets: dict[str, str], admin: BrokerAdmin,
        make_home: MakeHome) -> None:
    """The plugin saves its JSON on every change, so a restart keeps the homes' accounts; the admin's open
    connection comes back and subscribes to the answers again (a clean start forgets it)."""
    home = make_home()
    port = port_of(stack_env)
    mosquitto.stop(profile)
    mosquitto.start(profile, secrets)
    assert admin.home_account_names(home.tenant_id) == [home.ha[0], home.device[0]]
    with session(port, *home.device, client_id=home.device[0]) as dev:
        assert dev.publish(f"{home.prefix}zigbee2mqtt/plug", b"{}").value in (SUCCESS, NO_SUBSCRIBERS)
        assert dev.publish(f"{home.prefix}homeassistant/sensor/plug/config", b"{}").value == NOT_AUTHORIZED
    assert connect_code(port, *home.device, client_id=f"hats-test-{home.tenant_id}").value == NOT_AUTHORIZED


def test_a_publisher_on_the_wrong_account_is_told_not_dropped_silently(stack_env: dict[str, str],
                                                                       make_home: MakeHome) -> None:
    """Under MQTT 3.1.1 Mosquitto acknowledges a refused message and drops it; the simulator's publisher
    speaks MQTT 5, so a test or a simulated home publishing with the wrong account fails naming it."""
    a, b = make_home(), make_home()
    publisher = Publisher(Target("127.0.0.1", port_of(stack_env), *a.ha, f"{b.prefix}homeassistant/events",
                                 tls=mqtt_context(stack_env)))
    for i in range(3):
        publisher.publish(f"{i}".encode())
    with pytest.raises(PublishRefused, match=f"refused 3 of 3 messages from '{a.ha[0]}'"):
        publisher.close()
    own = Publisher(Target("127.0.0.1", port_of(stack_env), *a.ha, f"{a.prefix}homeassistant/events",
                           tls=mqtt_context(stack_env)))
    own.publish(b"21.5")
    own.close()  # nothing refused: no error
