"""`hats`: the local stack and demo from one command line (`hats up|down|status|run|env`), `hats import`
of a Home Assistant's history, from its recorder or its WebSocket API (the worker's settings from the
environment; ingest_worker/importers/run.py), `hats tenant` to administer homes (tenancy/cli.py),
`hats backup` / `hats restore` (backups/cli.py), and `hats docs` to write the README's tables from the code
(devstack/readme_tables.py)."""

from __future__ import annotations

import argparse
import sys

from backups import cli as backups_cli
from devstack import certs, stack
from devstack.procs import StackError
from devstack.profile import StackConfigError, load_profile
from ingest_worker.importers import run as importer
from tenancy import cli as tenancy_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hats", description=__doc__)
    parser.add_argument("--profile", default="dev", choices=["dev", "test"],
                        help="which stack: dev (make run) or test (make test); each has its own ports and state")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start Mosquitto, InfluxDB and PostgreSQL, migrate, write the env file")
    sub.add_parser("down", help="stop everything this profile started")
    sub.add_parser("purge", help="stop everything and delete the profile's data, secrets, logs and backups")
    sub.add_parser("status", help="which services and processes are running")
    sub.add_parser("env", help="print the env file's path (source it for the stack's settings)")
    tls = sub.add_parser("certs", help="the stack's TLS certificates: `renew` issues new server certificates "
                                       "from the same CA and makes the running services serve them")
    tls.add_argument("action", choices=["renew", "show"],
                     help="renew: new server certificates; show: each certificate's expiry")
    run = sub.add_parser("run", help="the demo: stack, worker, simulated fleet, Dagster UI, first rollups")
    run.add_argument("--backfill-hours", type=int, default=None,
                     help="hours of history the simulator replays "
                          "(default: since 00:00 UTC yesterday, so the warehouse has a complete day)")
    history = sub.add_parser("import", help="import a Home Assistant's history (states and statistics) from its "
                                              "recorder or a running Home Assistant")
    importer.add_arguments(history)
    tenancy_cli.add_arguments(sub.add_parser("tenant", help="add, list, show, change, disable, enable or remove "
                                                           "homes (settings from the environment)"))
    docs = sub.add_parser("docs", help="write README.md's tables of assets, checks, jobs, schedules, sensors and "
                                       "settings from the code (--check: only say whether they are current)")
    docs.add_argument("--check", action="store_true", help="exit 1 naming the stale tables, write nothing")
    backups_cli.add_backup_arguments(sub.add_parser("backup", help="back up PostgreSQL and InfluxDB now, list the "
                                                               "backups, or apply their retention"))
    backups_cli.add_restore_arguments(sub.add_parser("restore", help="restore a backup into a scratch stack "
                                                                     "(or --live), PostgreSQL to the latest or --to"))
    args = parser.parse_args(argv)
    if args.command == "docs":
        from devstack import readme_tables

        return readme_tables.main(check=args.check)
    if args.command == "backup":
        return backups_cli.main_backup(args)
    if args.command == "restore":
        return backups_cli.main_restore(args)
    if args.command == "import":
        return importer.main(args)
    if args.command == "tenant":
        return tenancy_cli.main(args)
    try:
        profile = load_profile(args.profile)
        if args.command == "up":
            print(f"hats: starting the {profile.name} stack in {profile.state_dir}", file=sys.stderr)
            stack.up(profile)
            print(f"hats: up. Settings: . {profile.env_file}", file=sys.stderr)
        elif args.command == "down":
            stack.down(profile)
            print(f"hats: the {profile.name} stack is down", file=sys.stderr)
        elif args.command == "purge":
            stack.purge(profile)
            print(f"hats: the {profile.name} stack and its data are gone", file=sys.stderr)
        elif args.command == "status":
            states = stack.status(profile)
            for name, running in states.items():
                print(f"{name:12} {'running' if running else 'stopped'}")
            return 0 if all(states[name] for name in ("mosquitto", "influxdb", "postgresql")) else 3
        elif args.command == "env":
            print(profile.env_file)
        elif args.command == "certs" and args.action == "renew":
            for issued in stack.renew_certificates(profile):
                print(f"renewed {issued.service:10} {issued.path}  "
                      f"valid until {issued.not_after:%Y-%m-%d %H:%M:%S} UTC")
            print(f"CA unchanged: {certs.ca_file(profile)} (clients keep trusting it)")
        elif args.command == "certs":
            for service in certs.SERVICES:
                path = certs.cert_file(profile, service)
                expiry = f"valid until {certs.not_after(path):%Y-%m-%d %H:%M:%S} UTC" if path.exists() else "missing"
                print(f"{service:10} {path}  {expiry}")
            print(f"CA         {certs.ca_file(profile)}")
        elif args.command == "run":
            from devstack import demo

            demo.run(profile, backfill_hours=args.backfill_hours)
    except (StackError, StackConfigError, FileNotFoundError) as exc:
        print(f"hats: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
