"""The ops exporter (`python -m ops_exporter`) as the stack's own process, with the env file's settings."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from devstack.procs import Managed, ensure_port_free, wait_until
from devstack.profile import LOOPBACK, PROJECT_ROOT, Profile

SETTINGS = ("HATS_EXPORTER_DSN", "HATS_EXPORTER_DAGSTER_DSN", "HATS_EXPORTER_PORT")


def process(profile: Profile) -> Managed:
    return Managed("ops_exporter", profile.path("run", "ops_exporter.pid"), profile.path("logs", "ops_exporter.log"))


def url(profile: Profile) -> str:
    return f"http://{LOOPBACK}:{profile.ports['exporter']}"


def _answers(profile: Profile) -> bool:
    try:
        with urllib.request.urlopen(f"{url(profile)}/metrics", timeout=5) as resp:  # noqa: S310 (loopback)
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start(profile: Profile, values: dict[str, str]) -> None:
    proc = process(profile)
    if proc.running():
        return
    ensure_port_free(profile.ports["exporter"], "HATS_EXPORTER_PORT", "the ops exporter")
    proc.start([sys.executable, "-m", "ops_exporter"], env={key: values[key] for key in SETTINGS}, cwd=PROJECT_ROOT)
    wait_until(lambda: _answers(profile), "the ops exporter", log=proc.log)


def stop(profile: Profile) -> bool:
    return process(profile).stop()
