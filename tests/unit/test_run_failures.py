"""A run ended from outside must say so in a test's assertion message. pytest-timeout's signal handler raises
its ``Failed`` in the main thread wherever it is; in CI that was Dagster's in-process executor waiting out a
step's retry delay, outside any step, so Dagster reported the run's own exception, no step failed, and the
fault test said only "An exception was thrown during execution" above ``assert []``."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType

import dagster as dg
import pytest

from tests.runs import failures

TIMEOUT = "Timeout (>600.0s) from pytest-timeout."
RETRY_DELAY_S = 300.0  # never waited out: the alarm ends the run first
ALARM_S = 0.5  # after the step failed: the executor is waiting out the retry's delay by then


@dg.asset(retry_policy=dg.RetryPolicy(max_retries=1, delay=RETRY_DELAY_S))
def store_gone() -> None:
    signal.setitimer(signal.ITIMER_REAL, ALARM_S)
    raise dg.Failure("the store is gone", allow_retries=True)


@pytest.fixture
def timeout_alarm() -> Iterator[None]:
    """pytest-timeout's signal method in small: SIGALRM raises ``Failed`` in the main thread (the asset
    arms the alarm)."""
    def expire(signum: int, frame: FrameType | None) -> None:
        pytest.fail(TIMEOUT, pytrace=False)

    previous = signal.signal(signal.SIGALRM, expire)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_run_ended_by_the_tests_timeout_while_waiting_to_retry_says_so(timeout_alarm: None) -> None:
    result = dg.materialize([store_gone], raise_on_error=False)
    assert not result.success
    assert result.get_step_failure_events() == []  # what the fault test's `assert steps` met in CI
    said = failures(result)
    assert said.startswith("run: Execution of run")
    assert TIMEOUT in said
