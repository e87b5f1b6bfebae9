"""The stack reads HATS_PG_WHEEL_VERSION as bootstrap.sh does: a changed version is looked for, by name, and both
take the default from one file (devstack/pg_wheel_version), so changing it there changes both."""

from __future__ import annotations

import os
import subprocess
import sys

from devstack.profile import PROJECT_ROOT

PROBE = ("from devstack.profile import StackConfigError, pg_bin_dir\n"
         "try:\n    print(pg_bin_dir())\nexcept StackConfigError as exc:\n    print('refused:', exc)\n")


def bin_dir_with(env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("HATS_PG_WHEEL_VERSION", "HATS_PG_BIN_DIR")}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_the_wheel_version_setting_is_the_one_looked_for() -> None:
    answer = bin_dir_with({"HATS_PG_WHEEL_VERSION": "99.1.0", "HATS_PG_HOME": "/nonexistent"})
    assert answer.startswith("refused: no PostgreSQL 99.1.0 binaries in /nonexistent/postgresql-99.1.0-")
    assert "HATS_PG_WHEEL_VERSION" in answer


def bootstrap_version(env: dict[str, str]) -> str:
    """The version bootstrap.sh would fetch: its own assignment line, run by bash from the project root."""
    script = (PROJECT_ROOT / "devstack" / "bootstrap.sh").read_text()
    [line] = [line for line in script.splitlines() if line.startswith("PG_WHEEL_VERSION=")]
    clean = {k: v for k, v in os.environ.items() if k != "HATS_PG_WHEEL_VERSION"}
    done = subprocess.run(["bash", "-c", f"set -euo pipefail; {line}; echo \"$PG_WHEEL_VERSION\""],
                          env={**clean, **env}, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_the_default_version_is_bootstraps() -> None:
    default = (PROJECT_ROOT / "devstack" / "pg_wheel_version").read_text().strip()
    assert bootstrap_version({}) == default
    assert f"/postgresql-{default}-" in bin_dir_with({"HATS_PG_HOME": "/nonexistent"})


def test_a_version_set_is_the_one_both_use() -> None:
    assert bootstrap_version({"HATS_PG_WHEEL_VERSION": "99.1.0"}) == "99.1.0"
    assert "/postgresql-99.1.0-" in bin_dir_with({"HATS_PG_WHEEL_VERSION": "99.1.0", "HATS_PG_HOME": "/nonexistent"})
