"""Which errors are store outages worth a retry, what the failure's headline says, and the retry settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import httpx
import psycopg
import pytest

from devstack import envfile
from hats_assets.defs.common.faults import (
    DEFAULT_DELAY_S,
    DEFAULT_RETRIES,
    INFLUXDB,
    POSTGRESQL,
    STEP_RETRY_POLICY,
    Outage,
    _policy_from,
    jitter_bound,
    longest_wait,
    nominal_delay,
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


def test_the_suite_runs_on_the_test_profiles_retry_policy() -> None:
    """The policy is bound when hats_assets loads; `make test` sources no env file, so tests/conftest.py sets
    the test profile's values first. On the defaults a fault test whose store stays down waits minutes."""
    assert _policy_from(envfile.TEST_STEP_RETRIES) == STEP_RETRY_POLICY, (
        f"{STEP_RETRY_POLICY} is not the test profile's: was hats_assets imported before tests/conftest.py ran?")


@pytest.mark.parametrize("policy", [_policy_from({}), _policy_from(envfile.TEST_STEP_RETRIES)])
def test_every_wait_dagster_draws_is_the_headlines_nominal_delay_give_or_take_its_jitter(
        policy: dg.RetryPolicy) -> None:
    """Dagster draws each retry's jitter itself: the headline can promise the nominal wait and the jitter's
    bound only, and ``longest_wait`` must bound every run of waits Dagster may draw."""
    draws = {retry: [policy.calculate_delay(retry) for _ in range(2_000)] for retry in range(1, policy.max_retries + 1)}
    for retry, waits in draws.items():
        nominal, bound = nominal_delay(policy, retry), jitter_bound(policy)
        assert all(nominal - bound <= wait <= nominal + bound for wait in waits)
        assert min(waits) < nominal < max(waits)  # the jitter goes both ways: the nominal wait is its middle
        assert max(waits) - min(waits) > bound  # ... and by about the bound
    assert max(map(sum, zip(*draws.values(), strict=True))) <= longest_wait(policy)
    assert longest_wait(policy) == sum(nominal_delay(policy, r) + jitter_bound(policy) for r in draws)


def test_the_default_policy_gives_up_on_a_store_down_for_good_within_eight_minutes() -> None:
    """4 retries from 15 s: 15, 45, 105, 225 s (± 15 s). From 30 s, Dagster's (2ⁿ − 1) backoff waited
    30, 90, 210, 450 s: a run whose store was down for good reported it after 13 minutes."""
    policy = _policy_from({})
    waits = [max(policy.calculate_delay(retry) for _ in range(2_000)) for retry in range(1, policy.max_retries + 1)]
    assert sum(waits) <= 8 * 60
    assert waits[0] >= DEFAULT_DELAY_S  # the first retry may still come after one delay: a restart fits


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


def test_a_jittered_policys_headline_says_the_wait_and_its_jitter() -> None:
    policy = _policy_from({})
    with pytest.raises(dg.Failure) as failed, step_faults(Attempt(1), "the rollup", ADDRESSES, policy):
        raise httpx.ConnectError("refused", request=REQUEST)
    assert (f"retried automatically in about {nominal_delay(policy, 2):.0f} ± {policy.delay:.0f} s (attempt 3 of "
            f"{policy.max_retries + 1}, exponential backoff)") in (failed.value.description or "")


def test_anything_else_fails_at_once() -> None:
    bug = fail_in_step(KeyError("quantity"))
    assert not bug.allow_retries
    assert "not a store outage, so not retried" in (bug.description or "")
    config = fail_in_step(dg.Failure("tenant_selection.tenants: ['x'] are not in core.tenants"))
    assert not config.allow_retries
