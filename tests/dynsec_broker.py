"""A second, throw-away Mosquitto for one test, whose ACLs *refuse* subscriptions.

The stack's Mosquitto uses `acl_file`, which grants every SUBSCRIBE and only withholds delivery, so it
can never answer a SUBACK with a failure code. Mosquitto 2's dynamic security plugin (shipped in
Debian's `mosquitto` package) checks a subscription against the client's roles and refuses what they
do not allow (`defaultACLAccess.subscribe: false`): 0x80 to an MQTT 3.1.1 client, 0x87 to MQTT 5.

The plugin's JSON is written here with the stack's own `hash_password` (devstack/mosquitto.py).
Persistence is off: nothing of it outlives the test.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.mosquitto import hash_password, plugin_path, tls_options
from devstack.procs import Managed, port_open, wait_until
from devstack.profile import LOOPBACK, load_profile


@dataclass(frozen=True)
class Account:
    """A dynsec client with one role of its own; `acls` are (acltype, topic) pairs it is allowed, e.g.
    ("subscribeLiteral", "a/b"), ("subscribePattern", "a/#"), ("publishClientSend", "a/#")."""

    username: str
    password: str
    acls: Sequence[tuple[str, str]]


@dataclass(frozen=True)
class DynsecBroker:
    port: int
    log: Path
    host: str = LOOPBACK

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def render_dynsec(accounts: Sequence[Account]) -> dict[str, Any]:
    """Everything not granted is refused, except receiving what a granted subscription matches."""
    return {
        "clients": [{"username": a.username, **hash_password(a.password), "roles": [{"rolename": a.username}]}
                    for a in accounts],
        "roles": [{"rolename": a.username,
                   "acls": [{"acltype": kind, "topic": topic, "allow": True} for kind, topic in a.acls]}
                  for a in accounts],
        "groups": [],
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": True,
                             "subscribe": False, "unsubscribe": True},
    }


def render_config(port: int, dynsec_file: Path, log: Path) -> str:
    return "\n".join([
        "# A test's own broker (tests/dynsec_broker.py).",
        "per_listener_settings false",
        f"listener {port} {LOOPBACK}",
        *tls_options(load_profile("test")),  # the test stack's certificate: clients verify it with its CA
        "allow_anonymous false",
        f"plugin {plugin_path()}",
        f"plugin_opt_config_file {dynsec_file}",
        "persistence false",
        # Running as root, Mosquitto would drop to the `mosquitto` user and lose access to the test's folder.
        "user root",
        f"log_dest file {log}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type subscribe",
        "",
    ])


def _binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if found is None:
        raise FileNotFoundError("mosquitto is not installed; run `make bootstrap`")
    return found


@contextmanager
def dynsec_broker(base: Path, port: int, accounts: Sequence[Account]) -> Iterator[DynsecBroker]:
    """Run Mosquitto with the dynsec plugin on `port` (loopback) until the block ends, then stop it."""
    base.mkdir(parents=True, exist_ok=True)
    dynsec_file = base / "dynamic-security.json"
    dynsec_file.write_text(json.dumps(render_dynsec(accounts), indent=2))
    dynsec_file.chmod(0o600)
    log = base / "mosquitto.log"
    conf = base / "mosquitto.conf"
    conf.write_text(render_config(port, dynsec_file, log))
    proc = Managed("test mosquitto (dynsec)", base / "mosquitto.pid", base / "mosquitto.out")
    proc.start([_binary(), "-c", str(conf)])
    try:
        wait_until(lambda: port_open(port) or not proc.running(), "the test's dynsec Mosquitto", log=proc.log)
        if not proc.running():
            raise RuntimeError(f"the test's dynsec Mosquitto exited:\n{proc.log.read_text(errors='replace')}"
                               f"\n{log.read_text(errors='replace') if log.exists() else ''}")
        yield DynsecBroker(port, log)
    finally:
        proc.stop()
