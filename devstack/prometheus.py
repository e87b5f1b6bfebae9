"""Prometheus 2.x (Debian's `prometheus`) as the stack's own process: loopback only, data in the profile's
state folder, two days kept, scraping the ops exporter and every worker registered with it.

Workers come and go (`hats run`'s, a test's, registry-mode shards, the soak's): each is a file-discovery target
(`register_worker`), so the scrape config never lists ports that nothing listens on. The alert rules are the
chart's own file (deploy/hats/prometheus/alerts.yml); the test profile scrapes every second and runs the same
rules with every duration (`for:`, range selectors) scaled down, from `TIMING`, so a live test sees an alert
fire and resolve in seconds with the rules an operator runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devstack.procs import Managed, StackError, ensure_port_free, wait_until
from devstack.profile import LOOPBACK, PROJECT_ROOT, Profile

RULES = PROJECT_ROOT / "deploy" / "hats" / "prometheus" / "alerts.yml"
RETENTION = "2d"  # a local stack's metrics answer "what happened today", not capacity planning
BINARY = "prometheus"
PROMTOOL = "promtool"
WORKER_JOB, EXPORTER_JOB = "hats_worker", "hats_exporter"
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)\b")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Timing:
    """How often Prometheus scrapes and evaluates, and the factor applied to every duration of the rules."""

    interval_s: int
    scale: float


TIMING = {"dev": Timing(interval_s=15, scale=1.0), "test": Timing(interval_s=1, scale=1 / 30)}


def process(profile: Profile) -> Managed:
    return Managed("prometheus", profile.path("prometheus", "prometheus.pid"), profile.path("logs", "prometheus.log"))


def url(profile: Profile) -> str:
    return f"http://{LOOPBACK}:{profile.ports['prometheus']}"


def targets_dir(profile: Profile) -> Path:
    return profile.path("prometheus", "targets")


def scale_durations(text: str, scale: float) -> str:
    """The rules with every `for:` and `[range]` duration multiplied by `scale` (whole seconds, at least 1 s)."""
    if scale == 1.0:
        return text

    def scaled(match: re.Match[str]) -> str:
        seconds = max(1, round(int(match.group(1)) * _UNIT_S[match.group(2)] * scale))
        return f"{seconds}s"

    text = re.sub(r"(?m)^(\s*for:\s*)(\S+)", lambda m: m.group(1) + _DURATION.sub(scaled, m.group(2)), text)
    return re.sub(r"\[([^\]]+)\]", lambda m: "[" + _DURATION.sub(scaled, m.group(1)) + "]", text)


def render_config(profile: Profile, rules: Path) -> str:
    """prometheus.yml as JSON (YAML's subset): the exporter, the registered workers, Prometheus itself."""
    timing = TIMING[profile.name]
    interval = f"{timing.interval_s}s"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval,
                   "external_labels": {"stack": profile.name}},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": WORKER_JOB, "file_sd_configs": [{"files": [str(targets_dir(profile) / "*.json")],
                                                         "refresh_interval": interval}]},
            {"job_name": EXPORTER_JOB, "static_configs": [{"targets": [f"{LOOPBACK}:{profile.ports['exporter']}"]}]},
            {"job_name": "prometheus", "static_configs": [{"targets": [f"{LOOPBACK}:{profile.ports['prometheus']}"]}]},
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def write_config(profile: Profile, base: Path) -> Path:
    """The profile's rules (durations scaled) and config under `base`; returns the config's path."""
    base.mkdir(parents=True, exist_ok=True)
    rules = base / "alerts.yml"
    rules.write_text(scale_durations(RULES.read_text(), TIMING[profile.name].scale))
    config = base / "prometheus.yml"
    config.write_text(render_config(profile, rules))
    return config


def check_config(profile: Profile, base: Path) -> None:
    """`promtool check config` on what `start` would run (rules included); raises with promtool's answer."""
    config = write_config(profile, base)
    targets_dir(profile).mkdir(parents=True, exist_ok=True)
    result = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"promtool check config {config} failed:\n{result.stdout}{result.stderr}")


def _ready(profile: Profile) -> bool:
    try:
        with urllib.request.urlopen(f"{url(profile)}/-/ready", timeout=1) as resp:  # noqa: S310 (loopback)
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start(profile: Profile) -> None:
    """Start Prometheus, or make a running one reload its (re-rendered) config and rules with SIGHUP."""
    proc = process(profile)
    base = profile.path("prometheus")
    config = write_config(profile, base)
    targets_dir(profile).mkdir(parents=True, exist_ok=True)
    pid = proc.pid()
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
        return
    ensure_port_free(profile.ports["prometheus"], "HATS_PROMETHEUS_PORT", "Prometheus")
    proc.start([BINARY, f"--config.file={config}", f"--storage.tsdb.path={base / 'data'}",
                f"--storage.tsdb.retention.time={RETENTION}",
                f"--web.listen-address={LOOPBACK}:{profile.ports['prometheus']}"])
    wait_until(lambda: _ready(profile), "Prometheus", log=proc.log)


def stop(profile: Profile) -> bool:
    return process(profile).stop()


def register_worker(profile: Profile, name: str, port: int) -> Path:
    """Have Prometheus scrape the worker on `port` (label worker=`name`) from its next file-discovery pass."""
    folder = targets_dir(profile)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": [f"{LOOPBACK}:{port}"], "labels": {"worker": name}}]))
    tmp.replace(target)
    return target


def unregister_worker(profile: Profile, name: str) -> None:
    (targets_dir(profile) / f"{name}.json").unlink(missing_ok=True)


def unregister_all(profile: Profile) -> None:
    """`hats down`: the workers stopped with the stack; a later `hats up` must not scrape their ports."""
    for target in targets_dir(profile).glob("*.json"):
        target.unlink()


def main(argv: list[str] | None = None) -> int:
    """`python -m devstack.prometheus check-config [profile]` (make test): promtool on the generated config."""
    import sys
    import tempfile

    from devstack.profile import load_profile

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "check-config":
        print("usage: python -m devstack.prometheus check-config [dev|test]", file=sys.stderr)
        return 2
    profile = load_profile(args[1] if len(args) > 1 else "test")
    with tempfile.TemporaryDirectory(prefix="hats-prometheus-") as scratch:
        try:
            check_config(profile, Path(scratch))
        except StackError as exc:
            print(exc, file=sys.stderr)
            return 1
    print(f"promtool check config: the {profile.name} profile's prometheus.yml and rules are valid")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
