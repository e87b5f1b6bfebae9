"""PostgreSQL 17 as the `postgres` system user, on a loopback port, with SCRAM passwords.

initdb and pg_ctl refuse to run as root, and CI may clone the project under a folder only root can
enter, so the cluster's data directory, socket and log live under PG_DATA_ROOT (owned by postgres)
rather than in the project's state folder; the binaries come from bootstrap.sh.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from backups import wal
from devstack.procs import StackError, ensure_port_free, pid_alive, port_open, wait_until
from devstack.profile import LOOPBACK, Profile, pg_bin_dir

SUPERUSER = "postgres"
WAREHOUSE_DB = "hats"
DAGSTER_DB = "dagster"
# A quiet cluster still closes a WAL segment each hour, so archived WAL is never more than that behind.
ARCHIVE_TIMEOUT_S = 3600
# The databases every cluster has: PUBLIC may connect to them and make temporary tables there unless revoked.
SYSTEM_DBS = ("postgres", "template1")
# Large-object functions PUBLIC may execute in a stock cluster (a place to store data outside every grant).
LARGE_OBJECT_FUNCTIONS = ("SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'pg_catalog'::"
                          "regnamespace AND (p.proname LIKE 'lo\\_%' OR p.proname IN ('loread', 'lowrite'))")
# Roles the baseline migration creates; the stack only gives them their passwords.
LOGIN_ROLES = {"hats_ingest": "pg_ingest", "hats_dagster": "pg_dagster", "hats_analyst": "pg_analyst",
               "hats_exporter": "pg_exporter", "hats_backup": "pg_backup"}


def log_path(profile: Profile) -> Path:
    return profile.pg_data_dir / "postgres.log"


def dsn(profile: Profile, user: str, password: str, database: str = WAREHOUSE_DB) -> str:
    return f"postgresql://{user}:{password}@{LOOPBACK}:{profile.ports['pg']}/{database}"


def superuser_dsn(profile: Profile, secrets: dict[str, str], database: str = WAREHOUSE_DB) -> str:
    return dsn(profile, SUPERUSER, secrets["pg_superuser"], database)


def _as_postgres(argv: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = argv if os.geteuid() != 0 else ["runuser", "-u", SUPERUSER, "--", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _pg_ctl(profile: Profile, *args: str) -> subprocess.CompletedProcess[str]:
    return _as_postgres([str(pg_bin_dir() / "pg_ctl"), "-D", str(profile.pg_data_dir / "data"), *args])


def running(profile: Profile) -> bool:
    return (profile.pg_data_dir / "data" / "PG_VERSION").exists() and _pg_ctl(profile, "status").returncode == 0


def prepare_dirs(profile: Profile) -> None:
    owner = pwd.getpwnam(SUPERUSER)
    root = profile.pg_data_dir
    root.parent.mkdir(parents=True, exist_ok=True)
    root.parent.chmod(0o755)
    for folder in (root, root / "socket"):
        folder.mkdir(exist_ok=True)
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    root.chmod(0o700)
    # A pointer from the project's state folder, so `make status` and people find the cluster.
    link = profile.path("postgres")
    profile.state_dir.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.unlink(missing_ok=True)
        link.symlink_to(root)


def _initdb(profile: Profile, password: str) -> None:
    root = profile.pg_data_dir
    pwfile = root / "initdb.pw"
    owner = pwd.getpwnam(SUPERUSER)
    pwfile.write_text(password + "\n")
    os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    pwfile.chmod(0o600)
    try:
        result = _as_postgres([
            str(pg_bin_dir() / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER, f"--pwfile={pwfile}",
            "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8",
        ])
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        raise StackError(f"initdb failed in {root / 'data'}:\n{result.stderr or result.stdout}")


def system_identifier(profile: Profile) -> str:
    """The cluster's identifier (pg_controldata): its WAL archive's folder name (backups/wal.py)."""
    result = _as_postgres([str(pg_bin_dir() / "pg_controldata"), "-D", str(profile.pg_data_dir / "data")])
    for line in result.stdout.splitlines():
        if line.startswith("Database system identifier:"):
            return line.split(":", 1)[1].strip()
    raise StackError(f"pg_controldata found no system identifier in {profile.pg_data_dir / 'data'}: "
                     f"{result.stderr.strip()}")


def _archive_folder(profile: Profile) -> Path:
    """Every finished WAL segment goes to the stack's backup folder, for point-in-time recovery (`hats restore
    --to`); made here, owned by postgres, since the server writes it."""
    owner = pwd.getpwnam(SUPERUSER)
    folder = wal.archive_dir(profile.backup_dir, system_identifier(profile))
    for path in (profile.backup_dir, profile.backup_dir / wal.WAL_FOLDER, folder):
        path.mkdir(mode=0o700, exist_ok=True)
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return folder


def _server_options(profile: Profile) -> str:
    archive = _archive_folder(profile)
    options = [
        f"listen_addresses={LOOPBACK}",
        f"port={profile.ports['pg']}",
        f"unix_socket_directories={profile.pg_data_dir / 'socket'}",
        "password_encryption=scram-sha-256",
        "max_connections=200",
        "wal_level=replica",
        "archive_mode=on",
        f"archive_timeout={ARCHIVE_TIMEOUT_S}",
    ]
    if profile.name == "test":
        # The test cluster is disposable: durability costs time and proves nothing there.
        options += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
    # archive_command is a shell command with spaces and quotes: one -c argument, quoted for pg_ctl's shell.
    return " ".join([*(f"-c {option}" for option in options),
                     "-c " + shlex.quote(f"archive_command={wal.archive_command(archive)}")])


def start(profile: Profile, secrets: dict[str, str]) -> None:
    prepare_dirs(profile)
    if not (profile.pg_data_dir / "data" / "PG_VERSION").exists():
        _initdb(profile, secrets["pg_superuser"])
    if running(profile):
        return
    ensure_port_free(profile.ports["pg"], "HATS_PG_PORT", "PostgreSQL")
    result = _pg_ctl(profile, "start", "-w", "-t", "60", "-l", str(log_path(profile)), "-o", _server_options(profile))
    if result.returncode != 0:
        tail = "\n    ".join(log_path(profile).read_text(errors="replace").splitlines()[-15:]) \
            if log_path(profile).exists() else ""
        raise StackError(f"PostgreSQL did not start: {result.stderr.strip()}\n  last log lines:\n    {tail}")
    wait_until(lambda: port_open(profile.ports["pg"]), "PostgreSQL", log=log_path(profile))
    for database in (WAREHOUSE_DB, DAGSTER_DB):
        ensure_database(profile, secrets, database)


def stop(profile: Profile, mode: str = "fast") -> bool:
    """`mode` is pg_ctl's: "fast" for the stack, "immediate" (a crash: recovery at the next start) for faults."""
    if not running(profile):
        return False
    pidfile = profile.pg_data_dir / "data" / "postmaster.pid"
    postmaster = int(pidfile.read_text().split()[0]) if pidfile.exists() else None
    result = _pg_ctl(profile, "stop", "-m", mode, "-w", "-t", "60")
    if result.returncode != 0:
        raise StackError(f"pg_ctl stop failed: {result.stderr.strip()}")
    if postmaster is not None:
        # pg_ctl returns once the pid file is gone, which the postmaster removes just before it exits (later
        # with WAL archiving, whose last segments it waits for): "stopped" means the process is gone too.
        wait_until(lambda: not pid_alive(postmaster), "PostgreSQL's postmaster to exit", timeout=30)
    return True


@contextlib.contextmanager
def connect(conninfo: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        yield conn


def ensure_database(profile: Profile, secrets: dict[str, str], database: str, owner: str | None = None) -> None:
    with connect(superuser_dsn(profile, secrets, "postgres")) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        if owner is not None:
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(database),
                                                                         sql.Identifier(owner)))


def set_role_passwords(profile: Profile, secrets: dict[str, str]) -> None:
    """Passwords are deployment secrets, not schema: the migration creates the roles, this sets them."""
    with connect(superuser_dsn(profile, secrets)) as conn:
        for role, account in LOGIN_ROLES.items():
            conn.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(secrets[account])))


def harden_cluster(profile: Profile, secrets: dict[str, str]) -> None:
    """What no migration can do for a cluster (they run per database): PUBLIC loses CONNECT and TEMPORARY on
    `postgres` and `template1`, and EXECUTE on the large-object functions in them and in `dagster` (template1's
    catalog is copied into every database made later). The `hats` database's are its migration's (0016)."""
    with connect(superuser_dsn(profile, secrets, "postgres")) as conn:
        for database in SYSTEM_DBS:
            conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(
                sql.Identifier(database)))
    for database in (*SYSTEM_DBS, DAGSTER_DB):
        with connect(superuser_dsn(profile, secrets, database)) as conn:
            for (function,) in conn.execute(LARGE_OBJECT_FUNCTIONS).fetchall():
                conn.execute(sql.SQL("REVOKE EXECUTE ON FUNCTION {} FROM PUBLIC").format(sql.SQL(str(function))))
