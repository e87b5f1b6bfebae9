"""When a store goes away in the middle of a step: which errors are worth retrying, and what the run says.

A step (the rollup, a warehouse load, retention) talks to InfluxDB and PostgreSQL. Either may vanish while
it runs (a restart, a crash, a network cut). Such an error is the store's, not a home's: it stops the step
(``Outcomes.guard`` re-raises it instead of recording it against the home) and the step is retried with
exponential backoff (``STEP_RETRY_POLICY``). Every other error — a failed check, bad config, a bug, InfluxDB
refusing a statement — fails the step without a retry: retrying it would only fail again the same way.

The failure's headline is a sentence an operator can act on (``Progress.failure``): which store at which
address, what it did (refused, timed out, closed the connection), what the step was doing and for which
home and window, what state that leaves, whether it is retried, and what to check. The error itself stays
attached as the cause (its traceback in the run's log), never as the headline. Secrets never appear: the
PostgreSQL address comes from the DSN without its password, InfluxDB's from its base URL.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import dagster as dg
import httpx
import psycopg
from psycopg.conninfo import conninfo_to_dict

from hats_assets.defs.common.resources import InfluxUnreachable

INFLUXDB: Final = "InfluxDB"
POSTGRESQL: Final = "PostgreSQL"
RETRIES_ENV: Final = "HATS_DAGSTER_STEP_RETRIES"
DELAY_ENV: Final = "HATS_DAGSTER_RETRY_DELAY_S"
# Dagster's exponential backoff waits (2^n - 1) × the delay before retry n, its PLUS_MINUS jitter adds ± one
# delay at random: 15, 45, 105, 225 s (± 15 s each), a store gone for good fails the step after 390 ± 60 s of
# waiting; a restart or a failover fits. (30 s waited 30, 90, 210, 450 s: 13 minutes for a certain failure.)
DEFAULT_RETRIES: Final = 4
DEFAULT_DELAY_S: Final = 15.0
WHAT_TO_CHECK: Final = "check `hats status` (or the store's pod) and the store's log"

# What libpq and psycopg say when the server is gone, restarting or too slow (their messages carry no
# SQLSTATE before a connection exists). "password authentication failed", "does not exist" and the
# like are configuration, not outages: they are absent on purpose.
_PG_GONE: Final = (
    ("connection refused", "refused the connection"),
    ("could not connect", "refused the connection"),
    ("no such file or directory", "refused the connection"),
    ("the database system is shutting down", "was shutting down"),
    ("the database system is starting up", "was still starting up"),
    ("the database system is in recovery mode", "was recovering"),
    ("terminating connection due to administrator command", "shut down"),
    ("server closed the connection unexpectedly", "closed the connection"),
    ("consuming input failed", "closed the connection"),
    ("connection reset", "closed the connection"),
    ("the connection is lost", "closed the connection"),
    ("the connection is closed", "closed the connection"),
    ("timeout expired", "did not answer in time"),
    ("canceling statement due to statement timeout", "did not answer in time"),
)


@dataclass(frozen=True, slots=True)
class Outage:
    """A store that went away: which one, where, and what it did."""

    store: str
    address: str
    happened: str


def outage_of(error: BaseException, addresses: Mapping[str, str] | None = None) -> Outage | None:
    """The store outage behind ``error`` (itself or a cause in its chain), or None when it is not one."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _outage(current, addresses or {})
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


def _outage(error: BaseException, addresses: Mapping[str, str]) -> Outage | None:
    if isinstance(error, InfluxUnreachable):  # the write gate is up, InfluxDB behind it is not
        return Outage(INFLUXDB, error.url, error.happened)
    if isinstance(error, httpx.TransportError):
        happened = ("did not answer in time" if isinstance(error, httpx.TimeoutException)
                    else "refused the connection" if isinstance(error, httpx.ConnectError)
                    else "closed the connection")
        try:
            url = error.request.url
            address = f"{url.scheme}://{url.host}:{url.port}" if url.port else f"{url.scheme}://{url.host}"
        except RuntimeError:  # an error raised without its request
            address = addresses.get(INFLUXDB, "?")
        return Outage(INFLUXDB, address, happened)
    if isinstance(error, psycopg.OperationalError):
        text = str(error).lower()
        for needle, happened in _PG_GONE:
            if needle in text:
                return Outage(POSTGRESQL, addresses.get(POSTGRESQL, "?"), happened)
    return None


def pg_address(dsn: str) -> str:
    """``host:port/dbname`` of a libpq DSN, never its password (a bad DSN: "?" — its own error says why)."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "?"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def _policy_from(environ: Mapping[str, str]) -> dg.RetryPolicy:
    """The steps' retry policy, from ``HATS_DAGSTER_STEP_RETRIES`` and ``HATS_DAGSTER_RETRY_DELAY_S``; a bad
    value fails the code location's load naming the variable."""
    try:
        retries = int(environ.get(RETRIES_ENV, DEFAULT_RETRIES))
    except ValueError:
        raise ValueError(f"{RETRIES_ENV}={environ[RETRIES_ENV]!r} is not a whole number") from None
    try:
        delay = float(environ.get(DELAY_ENV, DEFAULT_DELAY_S))
    except ValueError:
        raise ValueError(f"{DELAY_ENV}={environ[DELAY_ENV]!r} is not a number of seconds") from None
    if not 0 <= retries <= 20:
        raise ValueError(f"{RETRIES_ENV}={retries}: give 0 (no retry) to 20")
    if not 0 < delay <= 3600:
        raise ValueError(f"{DELAY_ENV}={delay}: give more than 0 and at most 3600 seconds")
    return dg.RetryPolicy(max_retries=retries, delay=delay, backoff=dg.Backoff.EXPONENTIAL,
                          jitter=dg.Jitter.PLUS_MINUS)


def nominal_delay(policy: dg.RetryPolicy, retry: int) -> float:
    """The wait before retry ``retry`` (1 = the first) without its jitter: Dagster draws the jitter itself
    when it schedules the retry, so a message can only promise this and the jitter's bound."""
    return float(dg.RetryPolicy(max_retries=policy.max_retries, delay=policy.delay,
                                backoff=policy.backoff).calculate_delay(retry))


def jitter_bound(policy: dg.RetryPolicy) -> float:
    """How far Dagster's jitter moves each wait either way: PLUS_MINUS (the policies here) one delay. FULL
    only shortens a wait (0 here: the nominal wait is its longest)."""
    return float(policy.delay or 0) if policy.jitter is dg.Jitter.PLUS_MINUS else 0.0


def longest_wait(policy: dg.RetryPolicy) -> float:
    """The longest a step waits between its attempts in all, when every attempt meets the store down: how
    long a certain failure takes to show (attempts themselves aside)."""
    return sum(nominal_delay(policy, retry) + jitter_bound(policy) for retry in range(1, policy.max_retries + 1))


def _seconds(value: float) -> str:
    """A wait as the headline shows it: whole seconds, tenths under ten (the test profile's 0.5 s)."""
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}".removesuffix(".0")


# Bound when the code location loads (a policy is part of an asset's definition).
STEP_RETRY_POLICY: Final = _policy_from(os.environ)
# Run-level retries of the scheduled jobs (dagster.yaml's run_retries must be enabled): a run whose worker
# died (PostgreSQL, which holds Dagster's own event log, gone; the pod evicted) is started again from the
# failed steps. Steps that failed for their own reasons are not re-run: their retry policy already did that.
RUN_RETRY_TAGS: Final = {"dagster/max_retries": "2", "dagster/retry_strategy": "FROM_FAILURE",
                         "dagster/retry_on_asset_or_op_failure": "false"}


class StepContext(Protocol):
    """What a failure's message needs of the step's context (an asset's execution context has both)."""

    @property
    def retry_number(self) -> int: ...

    @property
    def log(self) -> Any: ...


@dataclass(slots=True)
class Progress:
    """What the step is doing right now, so a failure can say what was interrupted and what it leaves."""

    step: str
    doing: str = "before any home (reading which homes the run serves)"
    leaves: str = "nothing was written by this step"

    def at(self, doing: str, leaves: str) -> None:
        self.doing, self.leaves = doing, leaves

    def failure(self, outage: Outage, context: StepContext, policy: dg.RetryPolicy) -> str:
        attempt, retries = context.retry_number, policy.max_retries
        if attempt < retries:
            jitter = f" ± {_seconds(jitter_bound(policy))}" if jitter_bound(policy) else ""
            then = (f"retried automatically in about {_seconds(nominal_delay(policy, attempt + 1))}{jitter} s "
                    f"(attempt {attempt + 2} of {retries + 1}, exponential backoff)")
        else:
            then = (f"not retried again: {retries + 1} attempts failed; the schedule or the late-data sensor "
                    "asks for it again, or re-execute the run from failure once the store is back")
        return (f"{outage.store} at {outage.address} {outage.happened} during {self.step}: {self.doing}. "
                f"{self.leaves[:1].upper()}{self.leaves[1:]}; {then}; {WHAT_TO_CHECK}.")


@contextlib.contextmanager
def step_faults(context: StepContext, step: str, addresses: Mapping[str, str],
                policy: dg.RetryPolicy = STEP_RETRY_POLICY) -> Iterator[Progress]:
    """Run a step's body: a store outage becomes a retried ``Failure`` with an actionable headline;
    anything else fails at once (``allow_retries=False``), its own error as the cause."""
    progress = Progress(step)
    try:
        yield progress
    except dg.Failure as failure:
        if outage_of(failure, addresses) is None:
            failure.allow_retries = False  # bad config, a refused selection: the same run fails the same way
        raise
    except Exception as error:
        outage = outage_of(error, addresses)
        if outage is None:
            raise dg.Failure(description=f"{step} failed while {progress.doing}: {type(error).__name__}: "
                                         f"{error} — not a store outage, so not retried; "
                                         f"{progress.leaves}", allow_retries=False) from error
        context.log.warning("%s: %s %s; %s", step, outage.store, outage.happened, type(error).__name__)
        raise dg.Failure(description=progress.failure(outage, context, policy),
                         metadata={"store": outage.store, "address": outage.address,
                                   "interrupted": progress.doing, "leaves": progress.leaves,
                                   "attempt": context.retry_number + 1},
                         allow_retries=True) from error


def store_addresses(influxdb_url: str | None, postgres_dsn: str | None) -> dict[str, str]:
    """Where the step's stores are, for its failure message: InfluxDB's base URL, PostgreSQL's host:port/db."""
    out: dict[str, str] = {}
    if influxdb_url:
        out[INFLUXDB] = influxdb_url.rstrip("/")
    if postgres_dsn:
        out[POSTGRESQL] = pg_address(postgres_dsn)
    return out
