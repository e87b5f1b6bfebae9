"""`hats tenant add|list|show|change|disable|enable|remove`: the operator's shell over tenancy.registry.

Settings come from the environment (`. .hats/env` locally). Secrets never come from argv: a Home
Assistant token or the worker's password on a home's own broker is read from the environment variable
named with `--ha-token-env` / `--broker-password-env`. Exit codes: 0 done, 1 input refused (the message
names the field), 2 settings or a service refused (nothing was left half-made).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx
import psycopg

from tenancy import secrets as tenant_secrets
from tenancy.influx import InfluxAdminError
from tenancy.registry import TenantRecord, TenantRegistry
from tenancy.settings import SettingsError, load_settings
from tenancy.spec import TenantError, TenantSpec

EXIT_OK, EXIT_REFUSED, EXIT_SETTINGS = 0, 1, 2
# option dest → spec field, for the options `add` and `change` share
SPEC_OPTIONS = {"name": "name", "prefix": "topic_prefix", "broker_url": "broker_url",
                "broker_username": "broker_username", "ha_url": "ha_url", "time_zone": "time_zone",
                "series_budget": "series_budget", "raw_days": "raw_days", "rollup_months": "rollup_months"}
LIST_COLUMNS = (("tenant_id", "id"), ("status", "status"), ("topic_prefix", "prefix"), ("time_zone", "time zone"),
                ("series_budget", "budget"), ("raw_days", "raw d"), ("rollup_months", "rollup mo"), ("name", "name"))


def _spec_options(parser: argparse.ArgumentParser, adding: bool) -> None:
    parser.add_argument("--name", required=adding, help="the home's display name")
    parser.add_argument("--prefix", help="its topic prefix on the platform broker, e.g. hats/acme/ "
                                         "(plain, ends with '/'; '' for none)")
    parser.add_argument("--broker-url", help="its own broker, mqtt(s)://host[:port] (with --broker-username)")
    parser.add_argument("--broker-username", help="the worker's account on that broker")
    parser.add_argument("--broker-password-env", metavar="VAR",
                        help="environment variable holding that account's password (never on the command line)")
    parser.add_argument("--ha-url", help="Home Assistant's base URL for the WebSocket source")
    parser.add_argument("--ha-token-env", metavar="VAR",
                        help="environment variable holding Home Assistant's long-lived access token")
    parser.add_argument("--time-zone", help="IANA time zone of the home's local days, e.g. Europe/Amsterdam")
    parser.add_argument("--series-budget", type=int, help="entities the home may have (1-1000000)")
    parser.add_argument("--raw-days", type=int, help="days raw points are kept (1-365)")
    parser.add_argument("--rollup-months", type=int, help="months rollups are kept (1-240)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="tenant_command", required=True)
    add = sub.add_parser("add", help="add a home: its row, InfluxDB database, accounts and secrets")
    add.add_argument("id", help="tenant id, [a-z0-9_]{1,32}")
    _spec_options(add, adding=True)
    listing = sub.add_parser("list", help="every home")
    listing.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    show = sub.add_parser("show", help="one home: its row, accounts, latest usage and which secrets it has")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    change = sub.add_parser("change", help="change fields of a home")
    change.add_argument("id")
    _spec_options(change, adding=False)
    for verb, text in (("disable", "stop serving a home (its data stays; its accounts cannot log in)"),
                       ("enable", "serve a disabled home again")):
        sub.add_parser(verb, help=text).add_argument("id")
    remove = sub.add_parser("remove", help="print what removing a home deletes; with --yes, delete it")
    remove.add_argument("id")
    remove.add_argument("--yes", action="store_true", help="really delete (billing rows are kept)")
    remove.add_argument("--json", action="store_true")


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    fields = {spec: getattr(args, dest) for dest, spec in SPEC_OPTIONS.items() if getattr(args, dest) is not None}
    for name in ("topic_prefix", "broker_url", "broker_username", "ha_url"):
        if fields.get(name) == "":
            fields[name] = None
    return fields


def _secret(args: argparse.Namespace, option: str, field: str) -> str | None:
    variable = getattr(args, option)
    return None if variable is None else tenant_secrets.from_environment(variable, field)


def _table(records: list[TenantRecord]) -> str:
    cells = [[header for _, header in LIST_COLUMNS]]
    cells += [["-" if getattr(r, col) is None else str(getattr(r, col)) for col, _ in LIST_COLUMNS] for r in records]
    widths = [max(len(row[i]) for row in cells) for i in range(len(LIST_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def _run(args: argparse.Namespace, registry: TenantRegistry) -> int:
    command = args.tenant_command
    if command == "add":
        spec = TenantSpec.parse(id=args.id, **_fields(args))
        record = registry.add(spec, ha_token=_secret(args, "ha_token_env", "ha_token"),
                              broker_password=_secret(args, "broker_password_env", "broker_password"))
        print(f"hats tenant: added {record.tenant_id} (InfluxDB {record.database}); "
              f"`hats tenant show {record.tenant_id}` lists its accounts")
    elif command == "list":
        records = registry.list_tenants()
        print(json.dumps([r.as_json() for r in records], indent=2) if args.json else _table(records))
    elif command == "show":
        details = registry.show(args.id)
        shown = details.as_json()
        if args.json:
            print(json.dumps(shown, indent=2, default=str))
        else:
            print("\n".join(f"{key}: {value}" for key, value in shown["tenant"].items()))
            print(f"database: {shown['database']} ({'exists' if details.database_exists else 'missing'})")
            for account in shown["accounts"]:
                state = f"disabled {account['disabled_at']}" if account["disabled_at"] else "enabled"
                print(f"account: {account['system']} {account['name']} ({account['purpose']}; {state})")
            print(f"latest usage: {shown['latest_usage'] or '(none metered yet)'}")
            print(f"secrets: {', '.join(shown['secrets']) or '(none)'}")
    elif command == "change":
        record = registry.change(args.id, ha_token=_secret(args, "ha_token_env", "ha_token"),
                                 broker_password=_secret(args, "broker_password_env", "broker_password"),
                                 **_fields(args))
        print(f"hats tenant: changed {record.tenant_id}")
    elif command in ("disable", "enable"):
        record = registry.disable(args.id) if command == "disable" else registry.enable(args.id)
        print(f"hats tenant: {record.tenant_id} is {record.status}")
    elif command == "remove":
        plan = registry.remove(args.id, dry_run=not args.yes)
        print(json.dumps(plan.as_json(), indent=2) if args.json else plan.describe())
        if not plan.done:
            print(f"hats tenant: nothing changed; `hats tenant remove {args.id} --yes` deletes all this",
                  file=sys.stderr)
    return EXIT_OK


def main(args: argparse.Namespace) -> int:
    try:
        with TenantRegistry(load_settings()) as registry:
            return _run(args, registry)
    except TenantError as exc:
        print(f"hats tenant: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return EXIT_SETTINGS
    except (InfluxAdminError, psycopg.Error, httpx.HTTPError, OSError, RuntimeError, LookupError) as exc:
        notes = getattr(exc, "__notes__", [])
        left = "".join(f"\n  {note}" for note in notes) if notes else "\n  nothing was left half-made"
        print(f"hats tenant: a service refused: {exc}{left}\n"
              "Check the settings it names (`. .hats/env` locally) and run the command again.", file=sys.stderr)
        return EXIT_SETTINGS
