"""The stack reads HATS_PG_WHEEL_VERSION as bootstrap.sh does: a changed version is looked for, by name."""

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


def test_the_default_version_is_bootstraps() -> None:
    script = (PROJECT_ROOT / "devstack" / "bootstrap.sh").read_text()
    answer = bin_dir_with({"HATS_PG_HOME": "/nonexistent"})
    assert "PG_WHEEL_VERSION=${HATS_PG_WHEEL_VERSION:-17.11.0}" in script
    assert "postgresql-17.11.0-" in answer
