"""The homes' accounts on the platform broker, made at run time through Mosquitto's dynamic security plugin.

Mosquitto's dynamic-security plugin takes commands as JSON on `$CONTROL/dynamic-security/v1` and answers
on `.../response`: accounts, roles and ACLs change while the broker runs (no restart, no file to copy),
from anywhere the admin account can connect — the same for the local stack and a managed broker in a
cluster. `BrokerAdmin` is that request/response client (paho-mqtt 2, MQTT 5), one correlation id per
command, every refused command named with the broker's answer.

What a home gets, each account with a role of its own name and **bound to a client id equal to its name**
(dynsec `setClientId`): a client presenting any other id is refused at CONNECT (0x87), so no home account
can connect with a worker's client id, kick the worker off and wipe its persistent session's queue. Only
the platform's worker accounts (and the broker admin, who can do anything anyway) are unbound.

* `home_<t>_ha` — Home Assistant: reads and writes everything under the home's prefix; the only one of
  the home's accounts that may publish a `…/config` topic (MQTT discovery configs).
* `home_<t>_device` — the home's devices (zigbee2mqtt, ESPHome, Tasmota…): publishes under the prefix,
  except any topic ending in `/config` up to `CONFIG_DENY_DEPTH` levels below it (the worker subscribes to
  discovery configs two and three levels below the discovery prefix); subscribes only to its command
  topics (`DEVICE_COMMAND_TOPICS`).
* `home_<t>_reader` (on request) — read-only under the prefix: the home's "own broker account" a worker
  reads that home with when it must not share the worker's connection. Bound like the others: the worker
  connects with client id = the account name.

Retained messages cannot be refused per account by Mosquitto 2.0's plugin (its ACLs know topics, not the
retain flag), so what keeps a device from planting a retained discovery config is the `…/config` rule.

An existing account keeps its password on `ensure_*`: setting one disconnects the account's live clients
("Administrative action", measured), which `hats up` must not do to a running worker. `set_password`
changes it on purpose.
"""

from __future__ import annotations

import functools
import json
import re
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from ingest_worker.contract import TENANT_PATTERN
from tenancy.iam import IamAccount

if TYPE_CHECKING:
    from tenancy.settings import TenancySettings

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
TIMEOUT_S = 10.0
# paho's reconnection back-off for the admin connection: soon after a broker restart, never a hammering.
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 2
DISCOVERY_PREFIX = "homeassistant"
# `…/config` topics a device may not publish: the prefix itself plus up to this many levels below it. The
# worker reads discovery configs at `<discovery prefix>/+/+/config` and `…/+/+/+/config`; eight levels
# leave room for a discovery prefix of up to four levels of its own.
CONFIG_DENY_DEPTH = 8
# What a device subscribes to, below the home's prefix: Home Assistant's birth message (`<discovery
# prefix>/status`, which zigbee2mqtt and ESPHome wait for), zigbee2mqtt's `<base>/<device>/set`, ESPHome's
# `<node>/<component>/<id>/command`, Tasmota's `cmnd/<device>/<command>`.
DEVICE_COMMAND_TOPICS = ("{discovery}/status", "+/+/set", "+/+/+/set", "+/+/+/command", "cmnd/#")
# The migration's rule for core.tenants.topic_prefix (0011): plain levels ending in '/'.
PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*/$")
HOME_KINDS = ("ha", "device", "reader")
PASSWORD_KEYS = {"ha": "mqtt_homeassistant", "device": "mqtt_device"}
ADMIN_CLIENT_PREFIX = "hats-broker-admin-"
# Errors the broker answers that mean "already as wanted" for the command that gets them.
_ALREADY = {"createRole": "Role already exists", "createClient": "Client already exists",
            "deleteClient": "Client not found", "deleteRole": "Role not found"}
_NOT_FOUND = {"getClient": "Client not found", "getRole": "Role not found"}
T = TypeVar("T")


class BrokerAdminError(RuntimeError):
    """The broker refused a command or the admin connection; the message names what and what to do."""


@dataclass(frozen=True)
class Acl:
    """One dynsec ACL: `acltype` publishClientSend, publishClientReceive, subscribePattern, …; of two
    matching ACLs the higher `priority` decides, so a deny at priority 1 carves a hole in an allow at 0."""

    acltype: str
    topic: str
    allow: bool = True
    priority: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"acltype": self.acltype, "topic": self.topic, "allow": self.allow, "priority": self.priority}


@dataclass(frozen=True)
class BrokerAccount:
    """A dynsec client with a role of its own name; `client_id` None = any client id (worker accounts)."""

    username: str
    password: str = field(repr=False)
    acls: tuple[Acl, ...]
    client_id: str | None
    purpose: str


def reads(topic: str) -> tuple[Acl, ...]:
    """Subscribe to `topic` and receive what it matches."""
    return Acl("subscribePattern", topic), Acl("publishClientReceive", topic)


def writes(topic: str) -> tuple[Acl, ...]:
    return (Acl("publishClientSend", topic),)


def account_name(tenant_id: str, kind: str) -> str:
    """`home_<tenant>_<kind>`, kind one of ha, device, reader."""
    if kind not in HOME_KINDS:
        raise ValueError(f"broker account kind {kind!r}: one of {', '.join(HOME_KINDS)}")
    if not TENANT_PATTERN.match(tenant_id):
        raise BrokerAdminError(f"tenant id {tenant_id!r} must match {TENANT_PATTERN.pattern}")
    return f"home_{tenant_id}_{kind}"


def _checked_prefix(topic_prefix: str) -> str:
    if not PREFIX_PATTERN.match(topic_prefix):
        raise BrokerAdminError(
            f"topic_prefix {topic_prefix!r}: a home's broker accounts are confined to a plain prefix ending in "
            "'/' (e.g. hats/acme/; no wildcards, no leading '/'); without one they would reach the whole broker")
    return topic_prefix


def home_accounts(tenant_id: str, topic_prefix: str, passwords: Mapping[str, str],
                  discovery_prefix: str = DISCOVERY_PREFIX) -> list[BrokerAccount]:
    """The Home Assistant and device accounts of a home, confined to `topic_prefix` (pure: what to make)."""
    prefix = _checked_prefix(topic_prefix)
    missing = [key for key in PASSWORD_KEYS.values() if not passwords.get(key)]
    if missing:
        raise BrokerAdminError(f"passwords for the home's broker accounts: {', '.join(missing)} missing or empty")
    ha, device = account_name(tenant_id, "ha"), account_name(tenant_id, "device")
    no_configs = tuple(Acl("publishClientSend", prefix + "+/" * depth + "config", allow=False, priority=1)
                       for depth in range(CONFIG_DENY_DEPTH + 1))
    commands = tuple(acl for topic in DEVICE_COMMAND_TOPICS
                     for acl in reads(prefix + topic.format(discovery=discovery_prefix)))
    return [
        BrokerAccount(ha, passwords[PASSWORD_KEYS["ha"]], (*reads(prefix + "#"), *writes(prefix + "#")), ha,
                      f"Home Assistant of {tenant_id}: reads and writes {prefix}#, the only account of the home "
                      "that may publish discovery configs (…/config)"),
        BrokerAccount(device, passwords[PASSWORD_KEYS["device"]], (*writes(prefix + "#"), *no_configs, *commands),
                      device, f"devices of {tenant_id}: publish under {prefix} except …/config, "
                              "subscribe to their command topics"),
    ]


def reader_account(tenant_id: str, topic_prefix: str, password: str) -> BrokerAccount:
    prefix = _checked_prefix(topic_prefix)
    if not password:
        raise BrokerAdminError(f"the password of {account_name(tenant_id, 'reader')} is empty")
    name = account_name(tenant_id, "reader")
    return BrokerAccount(name, password, reads(prefix + "#"), name,
                         f"a worker reading {tenant_id} on its own connection: reads {prefix}#, writes nothing")


def _iam(account: BrokerAccount) -> IamAccount:
    return IamAccount(system="mqtt", name=account.username, purpose=account.purpose)


class _ConnectionLost(BrokerAdminError):
    """The admin connection dropped (a broker restart, say) before every answer came."""


class _Link:
    """One admin connection. paho reconnects on its own; every (re)connection subscribes to the answers
    again, since a clean start forgets the subscription, and a request in flight across a disconnection
    raises `_ConnectionLost` for the caller to repeat (every public operation is idempotent)."""

    def __init__(self, admin: BrokerAdmin) -> None:
        self._admin = admin
        self._cond = threading.Condition()
        self._answers: dict[str, dict[str, Any]] = {}
        self._connack: ReasonCode | None = None
        self._refused: ReasonCode | None = None
        self._ready = False
        self._drops = 0  # disconnections so far
        self._subscribe_mid: int | None = None
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=ADMIN_CLIENT_PREFIX + uuid.uuid4().hex[:12],
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(admin.username, admin.password)
        if admin.tls is not None:
            self.client.tls_set_context(admin.tls)
        self.client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self.client.on_connect, self.client.on_subscribe = self._on_connect, self._on_subscribe
        self.client.on_disconnect, self.client.on_message = self._on_disconnect, self._on_message
        try:
            self.client.connect(admin.host, admin.port)
        except OSError as exc:
            raise BrokerAdminError(f"cannot reach {admin.where()}: {exc}") from None
        self.client.loop_start()
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, c: mqtt.Client, u: object, f: object, rc: ReasonCode, p: object) -> None:
        with self._cond:
            self._connack = rc
            if not rc.is_failure:
                self._subscribe_mid = c.subscribe(RESPONSE_TOPIC, qos=1)[1]
            self._cond.notify_all()

    def _on_subscribe(self, c: mqtt.Client, u: object, mid: int, rcs: list[ReasonCode], p: object) -> None:
        with self._cond:
            if mid == self._subscribe_mid:
                if rcs[0].is_failure:
                    self._refused = rcs[0]
                else:
                    self._ready = True
                self._cond.notify_all()

    def _on_disconnect(self, c: mqtt.Client, u: object, f: object, rc: ReasonCode, p: object) -> None:
        with self._cond:
            self._ready = False
            self._drops += 1
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(message.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            return
        with self._cond:
            for response in responses:
                if isinstance(response, dict) and isinstance(response.get("correlationData"), str):
                    self._answers[response["correlationData"]] = response
            self._cond.notify_all()

    def _wait_ready(self) -> None:
        admin = self._admin
        with self._cond:
            self._cond.wait_for(lambda: self._ready or self._refused is not None
                                or (self._connack is not None and self._connack.is_failure), admin.timeout_s)
            if self._connack is None:
                raise BrokerAdminError(f"no CONNACK from {admin.where()} within {admin.timeout_s:.0f} s")
            if self._connack.is_failure:
                raise BrokerAdminError(
                    f"{admin.where()} refused the broker admin {admin.username!r}: {self._connack}; check "
                    "HATS_BROKER_ADMIN_USERNAME and HATS_BROKER_ADMIN_PASSWORD")
            if self._refused is not None:
                raise BrokerAdminError(
                    f"{admin.where()} refused {admin.username!r} the subscription to {RESPONSE_TOPIC} "
                    f"({self._refused}): HATS_BROKER_ADMIN_USERNAME must name the dynamic-security admin")
            if not self._ready:
                raise BrokerAdminError(f"{admin.where()} did not confirm the subscription to {RESPONSE_TOPIC} "
                                       f"within {admin.timeout_s:.0f} s")

    def request(self, tagged: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send the commands in one message; their answers in order."""
        admin, keys = self._admin, [command["correlationData"] for command in tagged]
        names = ", ".join(command["command"] for command in tagged)
        self._wait_ready()
        with self._cond:
            drops = self._drops
        info = self.client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise _ConnectionLost(f"could not send {names} to {admin.where()}: rc {info.rc}")
        with self._cond:
            self._cond.wait_for(lambda: all(k in self._answers for k in keys) or self._drops != drops,
                                admin.timeout_s)
            if not all(k in self._answers for k in keys):
                for key in keys:
                    self._answers.pop(key, None)
                if self._drops != drops:
                    raise _ConnectionLost(f"the connection to {admin.where()} dropped while it ran {names}")
                raise BrokerAdminError(f"{admin.where()} did not answer {names} within {admin.timeout_s:.0f} s: "
                                       "is Mosquitto's dynamic security plugin loaded?")
            return [self._answers.pop(k) for k in keys]


def _repeated(operation: Callable[..., T]) -> Callable[..., T]:
    """Run a (idempotent) operation again, once, if the admin connection dropped under it: what it had
    done is read back and not done twice."""
    @functools.wraps(operation)
    def run(self: BrokerAdmin, *args: Any, **kwargs: Any) -> T:
        try:
            return operation(self, *args, **kwargs)
        except _ConnectionLost:
            return operation(self, *args, **kwargs)
    return run


class BrokerAdmin:
    """Mosquitto's dynamic-security admin over MQTT 5. Use it as a context manager to send many commands
    on one connection; a call outside one opens and closes its own connection."""

    def __init__(self, host: str, port: int, username: str, password: str, *, timeout_s: float = TIMEOUT_S,
                 discovery_prefix: str = DISCOVERY_PREFIX, tls: ssl.SSLContext | None = None) -> None:
        """`tls`: the verifying context of a TLS broker (ingest_worker/tls.py), None for plaintext."""
        self.host, self.port, self.username = host, port, username
        self.tls = tls
        self.password = password
        self.timeout_s = timeout_s
        self.discovery_prefix = discovery_prefix
        self._link: _Link | None = None
        self._lock = threading.RLock()

    @classmethod
    def from_settings(cls, settings: TenancySettings) -> BrokerAdmin:
        return cls(settings.mqtt_host, settings.mqtt_port, settings.broker_admin_username,
                   settings.broker_admin_password.get_secret_value(), tls=settings.mqtt_tls_context())

    def __repr__(self) -> str:
        return f"BrokerAdmin({self.username!r} at {self.host}:{self.port})"

    # -- connection ---------------------------------------------------------------------------------
    def __enter__(self) -> BrokerAdmin:
        if self._link is None:
            self._link = _Link(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close()

    def where(self) -> str:
        return f"the broker at {self.host}:{self.port} (HATS_MQTT_HOST, HATS_MQTT_PORT)"

    # -- commands -----------------------------------------------------------------------------------
    def run(self, commands: Sequence[Mapping[str, Any]], tolerate: bool = True) -> list[dict[str, Any]]:
        """Send `commands` in one message and return the broker's answer to each, in order. An error is
        raised naming the command and the broker's answer, except (with `tolerate`) the answers that mean
        the wish already holds (creating what exists, deleting what is gone) or, for get*, "not found"
        (then the answer is returned for the caller to read)."""
        tagged = [{**command, "correlationData": uuid.uuid4().hex} for command in commands]
        with self._lock:
            if self._link is not None:
                answers = self._link.request(tagged)
            else:
                link = _Link(self)
                try:
                    answers = link.request(tagged)
                finally:
                    link.close()
        for command, answer in zip(commands, answers, strict=True):
            error = answer.get("error")
            if error is None:
                continue
            name = command["command"]
            if tolerate and error in (_ALREADY.get(name), _NOT_FOUND.get(name)):
                continue
            subject = command.get("username") or command.get("rolename") or ""
            raise BrokerAdminError(f"the broker refused {name} {subject}: {error}")
        return answers

    @_repeated
    def client(self, username: str) -> dict[str, Any] | None:
        """The broker's record of an account (roles, clientid, disabled), or None."""
        answer = self.run([{"command": "getClient", "username": username}])[0]
        return None if "error" in answer else dict(answer["data"]["client"])

    @_repeated
    def ensure_account(self, account: BrokerAccount) -> bool:
        """Make `account` exist as described (role ACLs, client id binding, role membership); True if it
        was created. An existing account keeps its password (see the module's docstring)."""
        role = account.username
        current_role, current = self.run([{"command": "getRole", "rolename": role},
                                          {"command": "getClient", "username": account.username}])
        commands: list[dict[str, Any]] = []
        wanted = {(a.acltype, a.topic): a for a in account.acls}
        if "error" in current_role:
            commands.append({"command": "createRole", "rolename": role,
                             "acls": [a.as_json() for a in account.acls]})
        else:
            have = {(a["acltype"], a["topic"]): Acl(a["acltype"], a["topic"], bool(a["allow"]), int(a["priority"]))
                    for a in current_role["data"]["role"].get("acls", [])}
            for key, acl in have.items():
                if wanted.get(key) != acl:
                    commands.append({"command": "removeRoleACL", "rolename": role, "acltype": key[0], "topic": key[1]})
            commands += [{"command": "addRoleACL", "rolename": role, **acl.as_json()}
                         for key, acl in wanted.items() if have.get(key) != acl]
        created = "error" in current
        if created:
            create: dict[str, Any] = {"command": "createClient", "username": account.username,
                                      "password": account.password, "roles": [{"rolename": role}]}
            if account.client_id is not None:
                create["clientid"] = account.client_id
            commands.append(create)
        else:
            record = current["data"]["client"]
            if record.get("clientid") != account.client_id:
                bind: dict[str, Any] = {"command": "setClientId", "username": account.username}
                if account.client_id is not None:
                    bind["clientid"] = account.client_id
                commands.append(bind)
            roles = {r["rolename"] for r in record.get("roles", [])}
            commands += [{"command": "removeClientRole", "username": account.username, "rolename": r}
                         for r in sorted(roles - {role})]
            if role not in roles:
                commands.append({"command": "addClientRole", "username": account.username, "rolename": role})
        if commands:
            self.run(commands)
        return created

    @_repeated
    def set_password(self, username: str, password: str) -> None:
        """Change an account's password; the broker disconnects its connected clients."""
        self.run([{"command": "setClientPassword", "username": username, "password": password}], tolerate=False)

    @_repeated
    def set_enabled(self, usernames: Sequence[str], enabled: bool) -> None:
        """Enable or disable accounts; a disabled account is refused at CONNECT and its clients are
        disconnected at once."""
        verb = "enableClient" if enabled else "disableClient"
        if usernames:
            self.run([{"command": verb, "username": name} for name in usernames], tolerate=False)

    @_repeated
    def remove_accounts(self, usernames: Sequence[str]) -> list[str]:
        """Delete accounts and their roles; returns the names that existed."""
        existing = [name for name in usernames if self.client(name) is not None]
        commands = [{"command": c, key: name} for name in usernames
                    for c, key in (("deleteClient", "username"), ("deleteRole", "rolename"))]
        if commands:
            self.run(commands)
        return existing

    # -- a home's accounts --------------------------------------------------------------------------
    def ensure_home_accounts(self, tenant_id: str, topic_prefix: str,
                             passwords: Mapping[str, str]) -> list[IamAccount]:
        """The home's Home Assistant and device accounts (`passwords` keyed mqtt_homeassistant, mqtt_device),
        made or brought to their described rights; idempotent."""
        accounts = home_accounts(tenant_id, topic_prefix, passwords, self.discovery_prefix)
        with self._reuse():
            for account in accounts:
                self.ensure_account(account)
        return [_iam(account) for account in accounts]

    def ensure_reader_account(self, tenant_id: str, topic_prefix: str, password: str) -> IamAccount:
        """`home_<t>_reader`: read-only under the prefix, bound to client id = its name."""
        account = reader_account(tenant_id, topic_prefix, password)
        self.ensure_account(account)
        return _iam(account)

    @_repeated
    def home_account_names(self, tenant_id: str) -> list[str]:
        """The home's accounts that exist on the broker (ha, device, reader; in that order)."""
        names = [account_name(tenant_id, kind) for kind in HOME_KINDS]
        with self._reuse():
            return [name for name in names if self.client(name) is not None]

    def set_home_accounts_enabled(self, tenant_id: str, enabled: bool) -> None:
        with self._reuse():
            self.set_enabled(self.home_account_names(tenant_id), enabled)

    def remove_home_accounts(self, tenant_id: str) -> list[str]:
        with self._reuse():
            return self.remove_accounts([account_name(tenant_id, kind) for kind in HOME_KINDS])

    @contextmanager
    def _reuse(self) -> Iterator[None]:
        """One connection for the commands of one call (or the surrounding `with`)."""
        if self._link is not None:
            yield
            return
        with self:
            yield
