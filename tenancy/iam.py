"""Per-tenant accounts in every system, recorded in `iam.accounts` so an operator sees what a home owns."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg

SYSTEMS = ("postgresql", "mqtt", "influxdb")


@dataclass(frozen=True)
class IamAccount:
    """One account the platform made for a home: which system, its name, and what it is for."""

    system: str
    name: str
    purpose: str


def record(cur: psycopg.Cursor[Any], tenant_id: str, accounts: Iterable[IamAccount]) -> None:
    """Insert or refresh the accounts' rows (idempotent: `hats up` records the demo home's on every start)."""
    for account in accounts:
        cur.execute("""
            INSERT INTO iam.accounts (system, name, tenant_id, purpose) VALUES (%s, %s, %s, %s)
            ON CONFLICT (system, name) DO UPDATE SET purpose = EXCLUDED.purpose
             WHERE iam.accounts.tenant_id IS NOT DISTINCT FROM EXCLUDED.tenant_id""",
                    (account.system, account.name, tenant_id, account.purpose))
        if cur.rowcount != 1:
            raise psycopg.errors.UniqueViolation(
                f"{account.system} account {account.name} belongs to another tenant in iam.accounts")


def accounts_of(cur: psycopg.Cursor[Any], tenant_id: str) -> list[dict[str, Any]]:
    cur.execute("""SELECT system, name, purpose, created_at, disabled_at FROM iam.accounts
                    WHERE tenant_id = %s ORDER BY system, name""", (tenant_id,))
    columns = [c.name for c in cur.description or ()]
    return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


def set_disabled(cur: psycopg.Cursor[Any], tenant_id: str, disabled: bool) -> None:
    cur.execute("UPDATE iam.accounts SET disabled_at = CASE WHEN %s THEN now() END WHERE tenant_id = %s",
                (disabled, tenant_id))
