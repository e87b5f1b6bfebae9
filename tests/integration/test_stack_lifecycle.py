"""`hats up` is idempotent, a busy port is reported at once naming its setting, and `hats down` leaves
no process behind. Runs a complete scratch stack on free ports beside the shared test stack."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devstack import influxdb, mosquitto, postgres, stack
from devstack.procs import Managed, StackError, free_ports, port_open
from devstack.profile import PORT_SETTINGS, PROJECT_ROOT, Profile
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Profile]:
    ports = dict(zip(PORT_SETTINGS, free_ports(len(PORT_SETTINGS)), strict=True))
    profile = Profile(name="test", state_dir=tmp_path / "stack", ports=ports)
    yield profile
    stack.purge(profile)
    assert not profile.pg_data_dir.exists()


def _service_pids(profile: Profile) -> dict[str, int]:
    pids = {name: proc.pid() for name, proc in (("mosquitto", mosquitto.process(profile)),
                                                ("influxdb", influxdb.process(profile)))}
    postmaster = (profile.pg_data_dir / "data" / "postmaster.pid").read_text().split()[0]
    return {**{k: v for k, v in pids.items() if v is not None}, "postgresql": int(postmaster)}


def test_up_twice_is_harmless_and_down_leaves_nothing(scratch: Profile) -> None:
    env = stack.up(scratch)
    first = _service_pids(scratch)
    assert set(first) == {"mosquitto", "influxdb", "postgresql"}
    assert stack.up(scratch) == env  # same settings, same secrets
    assert _service_pids(scratch) == first  # nothing restarted
    with psycopg.connect(env["HATS_ANALYST_DSN"]) as conn:
        conn.execute("SELECT count(*) FROM analytics.entity_hourly")

    stack.down(scratch)
    assert all(not port_open(port) for name, port in scratch.ports.items() if name != "dagster")
    alive = [name for name, pid in first.items() if _pgid(pid) is not None]
    assert alive == []
    assert not any(stack.status(scratch).values())
    stack.down(scratch)  # twice is harmless too


def test_busy_port_is_reported_naming_the_setting(scratch: Profile) -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", scratch.ports["pg"]))
        squatter.listen()
        started = time.monotonic()
        with pytest.raises(StackError, match=f"port {scratch.ports['pg']} .*HATS_PG_PORT"):
            postgres.start(scratch, stack.secrets_for(scratch))
        assert time.monotonic() - started < 15  # reported, not waited on


def test_cli_reports_a_busy_port_with_exit_2(scratch: Profile) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "devstack.cli", "up"], capture_output=True, text=True, cwd=PROJECT_ROOT,
            env={**os.environ, "HATS_STATE_DIR": str(scratch.state_dir), "HATS_MQTT_PORT": str(port)},
            timeout=120, check=False,
        )
    assert result.returncode == 2
    assert f"port {port} is already in use" in result.stderr
    assert "HATS_MQTT_PORT" in result.stderr


def test_stopping_a_process_stops_its_children(tmp_path: Path) -> None:
    proc = Managed("tree", tmp_path / "tree.pid", tmp_path / "tree.log")
    pid = proc.start(["bash", "-c", "sleep 600 & sleep 600 & echo started; wait"])
    assert proc.running()
    def children() -> list[int]:
        return [int(p.name) for p in Path("/proc").iterdir()
                if p.name.isdigit() and int(p.name) != pid and _pgid(int(p.name)) == pid]

    def both_children() -> list[int] | None:
        found = children()
        return found if len(found) == 2 else None

    spawned: list[int] = wait_for(both_children, "the two children to start")
    assert proc.stop()
    assert [p for p in spawned if _pgid(p) == pid] == []
    assert not proc.running()


def _pgid(pid: int) -> int | None:
    """The process group of a live process; None once it is gone (a zombie is gone: it runs nothing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[2])
