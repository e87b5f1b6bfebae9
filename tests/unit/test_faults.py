"""Which errors are store outages worth a retry, what the failure's headline says, and the retry settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import httpx
import psycopg
import pytest

from hats_assets.defs.common.faults import (
    DEFAULT_DELAY_S,
    DEFAULT_RETRIES,
    INFLUXDB,
    POSTGRESQL,
    Outage,
    _policy_from,
    outage_of,
    pg_address,
    step_faults,
    store_addresses,
)

ADDRESSES = store_addresses("http://127.0.0.1:8086/", "postgresql://hats_dagster:s3cret@db.example:6432/hats")
REQUEST = httpx.Request("POST", "http://127.0.0.1:8086/write?db=hats_acme&rp=rollup")


def test_influxdb_gone_refused_timed_out_or_cut_is_an_outage_with_its_address() -> None:
    assert outage_of(httpx.ConnectError("refused", request=REQUEST)) == Outage(
        INFLUXDB, "http://127.0.0.1:8086", "refused the connection")
    assert outage_of(httpx.ReadTimeout("slow", request=REQUEST)).happened == "did not answer in time"  # type: ignore[union-attr]
    assert outage_of(httpx.RemoteProtocolError("cut", request=REQUEST)).happened == "closed the connection"  # type: ignore[union-attr]


@pytest.mark.parametrize(("message", "happened"), [
    ('connection to server at "127.0.0.1", port 5432 failed: Connection refused', "refused the connection"),
    ("consuming input failed: terminating connection due to administrator command", "shut down"),
    ("server closed the connection unexpectedly", "closed the connection"),
    ("connection failed: FATAL:  the database system is shutting down", "was shutting down"),
    ("connection timeout expired", "did not answer in time"),
])
def test_postgresql_gone_is_an_outage(message: str, happened: str) -> None:
    assert outage_of(psycopg.OperationalError(message), ADDRESSES) == Outage(POSTGRESQL, "db.example:6432/hats",
                                                                             happened)


@pytest.mark.parametrize("error", [
    psycopg.OperationalError('FATAL:  password authentication failed for user "hats_dagster"'),
    psycopg.OperationalError('FATAL:  database "hats" does not exist'),
    psycopg.errors.UniqueViolation("duplicate key"),
    RuntimeError("InfluxDB answered 400: partial write"),
    dg.Failure("tenant_selection.tenants: ['x'] are not in core.tenants"),
])
def test_config_errors_bugs_and_refusals_are_not_outages(error: Exception) -> None:
    assert outage_of(error, ADDRESSES) is None


def test_an_outage_found_through_the_error_chain() -> None:
    outer = RuntimeError("a home's rollup failed")
    outer.__cause__ = httpx.ConnectError("refused", request=REQUEST)
    assert outage_of(outer) is not None


def test_the_postgresql_address_never_shows_the_password() -> None:
    assert pg_address("postgresql://u:hunter2@h:1/d") == "h:1/d"
    assert "hunter2" not in str(ADDRESSES)
    assert pg_address("not a dsn ===") == "?"


def test_retry_settings_defaults_and_bad_values() -> None:
    policy = _policy_from({})
    assert (policy.max_retries, policy.delay) == (DEFAULT_RETRIES, DEFAULT_DELAY_S)
    assert policy.backoff == dg.Backoff.EXPONENTIAL
    assert policy.jitter == dg.Jitter.PLUS_MINUS
    assert _policy_from({"HATS_DAGSTER_STEP_RETRIES": "0"}).max_retries == 0
    with pytest.raises(ValueError, match="HATS_DAGSTER_STEP_RETRIES='x' is not a whole number"):
        _policy_from({"HATS_DAGSTER_STEP_RETRIES": "x"})
    with pytest.raises(ValueError, match=r"HATS_DAGSTER_RETRY_DELAY_S=0\.0: give more than 0"):
        _policy_from({"HATS_DAGSTER_RETRY_DELAY_S": "0"})


@dataclass
class Attempt:
    """A step's context as the failure message reads it: which attempt this is, and its log."""

    retry_number: int = 0
    log: Any = field(default_factory=lambda: logging.getLogger("test"))


POLICY = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL)


def fail_in_step(error: Exception, attempt: int = 0) -> dg.Failure:
    try:
        with step_faults(Attempt(attempt), "the rollup", ADDRESSES, POLICY) as progress:
            progress.at("home acme, hours 2026-11-30-09:00 to 2026-11-30-10:00 UTC", "the hours are left unmarked")
            raise error
    except dg.Failure as failure:
        return failure
    raise AssertionError("step_faults let the error through")


def test_an_outage_fails_with_a_headline_and_may_be_retried() -> None:
    failure = fail_in_step(httpx.ConnectError("[Errno 111] Connection refused", request=REQUEST))
    assert failure.allow_retries
    assert failure.description == (
        "InfluxDB at http://127.0.0.1:8086 refused the connection during the rollup: home acme, hours "
        "2026-11-30-09:00 to 2026-11-30-10:00 UTC. The hours are left unmarked; retried automatically in about "
        "10 s (attempt 2 of 4, exponential backoff); check `hats status` (or the store's pod) and the store's log.")
    assert isinstance(failure.__cause__, httpx.ConnectError)  # the error itself: the cause, not the headline
    last = fail_in_step(httpx.ConnectError("refused", request=REQUEST), attempt=3)
    assert "not retried again: 4 attempts failed" in (last.description or "")


def test_anything_else_fails_at_once() -> None:
    bug = fail_in_step(KeyError("quantity"))
    assert not bug.allow_retries
    assert "not a store outage, so not retried" in (bug.description or "")
    config = fail_in_step(dg.Failure("tenant_selection.tenants: ['x'] are not in core.tenants"))
    assert not config.allow_retries
