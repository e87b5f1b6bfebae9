"""Which homes a run serves, and what happened to each: tenants are handled inside runs, not partitions.

Partitions stay UTC hours and days (a tenant × hour multi-partition did not scale to 1,000 homes: issue
11). Each run serves every active home (``core.tenants.status = 'active'``) or the subset a data engineer
or a sensor names — the ``tenant_selection`` resource's ``tenants`` in the run config, or the run tag
``hats/tenants`` (comma-separated: a UI backfill can carry tags, not resource config); both given must
agree. Each home is processed on its own: an error in one is caught, recorded and listed in the asset's
metadata, and the other homes go on (``Outcomes``) — except a store outage (``faults.py``): InfluxDB or
PostgreSQL gone is no home's failure, it stops the step, which is retried.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import dagster as dg
from pydantic import Field

from hats_assets.defs.common import tracing
from hats_assets.defs.common.faults import outage_of
from hats_assets.defs.common.resources import PostgresResource
from ingest_worker.contract import TENANT_PATTERN

TENANTS_TAG: Final = "hats/tenants"
TENANT_COLUMNS: Final = "tenant_id, time_zone, series_budget, raw_days, rollup_months, status"
ACTIVE_SQL: Final = f"SELECT {TENANT_COLUMNS} FROM core.tenants WHERE status = 'active' ORDER BY tenant_id"
NAMED_SQL: Final = f"SELECT {TENANT_COLUMNS} FROM core.tenants WHERE tenant_id = ANY(%(tenants)s) ORDER BY tenant_id"
ERROR_CHARS: Final = 2_000  # an error's text kept per home: enough for InfluxDB's reason and the query


@dataclass(frozen=True, slots=True)
class Home:
    """One tenant as a run needs it (``core.tenants``)."""

    tenant_id: str
    time_zone: str
    series_budget: int
    raw_days: int
    rollup_months: int
    status: str


class TenantSelection(dg.ConfigurableResource):
    """The homes a run serves; empty means every active one."""

    tenants: list[str] = Field(default_factory=list, description=(
        "Tenant ids this run serves (e.g. [\"acme\"] to backfill or re-run one home); empty: every active "
        "tenant. The run tag hats/tenants (comma-separated) does the same for UI backfills."))


def tenants_tag(tenants: Sequence[str]) -> dict[str, str]:
    """The run tag naming a run's homes (sensors' requests carry it with the matching run config)."""
    return {TENANTS_TAG: ",".join(sorted(tenants))}


def tenants_run_config(tenants: Sequence[str]) -> dict[str, Any]:
    """Run config selecting ``tenants`` (the form a run request or ``dagster job launch`` takes)."""
    return {"resources": {"tenant_selection": {"config": {"tenants": sorted(tenants)}}}}


def requested(selection: TenantSelection, tags: Mapping[str, str]) -> list[str]:
    """The tenant ids a run names (config or tag), checked; empty when it names none."""
    from_config = sorted(set(selection.tenants))
    from_tag = sorted({t.strip() for t in tags.get(TENANTS_TAG, "").split(",") if t.strip()})
    if from_config and from_tag and from_config != from_tag:
        raise dg.Failure(description=f"run config tenant_selection.tenants {from_config} and run tag {TENANTS_TAG} "
                                     f"{from_tag} name different homes: give one of them, or the same homes")
    names = from_config or from_tag
    bad = [name for name in names if not TENANT_PATTERN.match(name)]
    if bad:
        raise dg.Failure(description=f"tenant_selection.tenants: {bad} are not tenant ids "
                                     f"({TENANT_PATTERN.pattern}); list ids as `hats tenant list` shows them")
    return names


def homes(postgres: PostgresResource, names: Sequence[str]) -> list[Home]:
    """``names``' rows (any status: naming a disabled home re-runs it on purpose), or every active home."""
    with postgres.connect() as conn:
        if names:
            rows = conn.execute(NAMED_SQL, {"tenants": list(names)}).fetchall()
        else:
            rows = conn.execute(ACTIVE_SQL).fetchall()
    found = [Home(str(r[0]), str(r[1]), int(r[2]), int(r[3]), int(r[4]), str(r[5])) for r in rows]
    unknown = sorted(set(names) - {home.tenant_id for home in found})
    if unknown:
        raise dg.Failure(description=f"tenant_selection.tenants: {unknown} are not in core.tenants; add them with "
                                     "`hats tenant add`, or leave them out")
    return found


def run_homes(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext, postgres: PostgresResource,
              selection: TenantSelection) -> list[Home]:
    """The homes this run serves (see the module docstring)."""
    return homes(postgres, requested(selection, context.run.tags))


@dataclass(slots=True)
class Outcome:
    """What a run did for one home: its status and the numbers it reports."""

    status: str = "ok"  # ok | failed | refused (a gate kept it out: failed blocking checks)
    error: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    def plain(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, **self.numbers, "duration_s": round(self.duration_s, 3)}
        if self.error:
            out["error"] = self.error
        return out


class Refused(Exception):
    """A home left out on purpose (a gate): not an error of the run, listed with its reason."""

    def __init__(self, reason: str, **numbers: Any) -> None:
        super().__init__(reason)
        self.numbers = numbers


def _add(before: Any, value: Any) -> Any:
    """Numbers of a home's several chunks (a backfill's days) add up; anything else is the latest."""
    numeric = (int, float)
    if isinstance(before, numeric) and isinstance(value, numeric) and not isinstance(value, bool):
        return before + value
    return value


@dataclass(slots=True)
class Outcomes:
    """Per-home results of one step; one home's exception never stops the next home."""

    log: Any
    by_home: dict[str, Outcome] = field(default_factory=dict)

    def each(self, homes: Sequence[Home]) -> Iterator[tuple[Home, Outcome]]:
        """Yield every home with its (fresh) outcome; use with ``guard`` around the home's work."""
        for home in homes:
            yield home, self.by_home.setdefault(home.tenant_id, Outcome())

    def guard(self, home: Home, outcome: Outcome, work: Callable[[], dict[str, Any] | None]) -> bool:
        """Run one home's work; its numbers land in ``outcome`` (and its span, ``tracing.home``); an exception
        is recorded, not raised — but a store outage is raised: recorded against every home after it, it would
        turn one restart into N failed homes."""
        began, started_ns = time.monotonic(), time.time_ns()
        try:
            numbers = work() or {}
        except Refused as refused:
            outcome.status, outcome.error = "refused", str(refused)
            outcome.numbers.update(refused.numbers)
            self.log.warning("tenant %s left out: %s", home.tenant_id, refused)
            tracing.home(home.tenant_id, started_ns, "refused", {"reason": str(refused), **refused.numbers})
            return False
        except Exception as exc:
            if outage_of(exc) is not None:
                tracing.home(home.tenant_id, started_ns, "failed", {}, exc)
                raise
            outcome.status = "failed"
            outcome.error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
            self.log.error("tenant %s failed: %s", home.tenant_id, traceback.format_exc(limit=5))
            tracing.home(home.tenant_id, started_ns, "failed", {}, exc)
            return False
        finally:
            outcome.duration_s += time.monotonic() - began
        outcome.numbers.update({key: _add(outcome.numbers.get(key), value) for key, value in numbers.items()})
        tracing.home(home.tenant_id, started_ns, "ok", numbers)
        return outcome.status == "ok"

    def failed(self) -> list[str]:
        return sorted(t for t, o in self.by_home.items() if o.status == "failed")

    def refused(self) -> list[str]:
        return sorted(t for t, o in self.by_home.items() if o.status == "refused")

    def metadata(self) -> dict[str, Any]:
        """What the asset's materialisation shows: per home what was done, and who failed or was left out."""
        totals: dict[str, Any] = {}
        for outcome in self.by_home.values():
            for key, value in outcome.numbers.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0) + value
        return {
            **totals,
            "tenants": len(self.by_home),
            "tenants_ok": sum(o.status == "ok" for o in self.by_home.values()),
            "tenants_failed": dg.MetadataValue.json(self.failed()),
            "tenants_refused": dg.MetadataValue.json(self.refused()),
            "per_tenant": dg.MetadataValue.json({t: o.plain() for t, o in sorted(self.by_home.items())}),
        }
