"""What a failed Dagster run in a test says about itself, for the assertion's message: a bare
``assert result.success`` on a CI machine prints only ``False``; these say which step failed and why."""

from __future__ import annotations

import dagster as dg
from dagster._core.events import JobFailureData
from dagster_shared.error import SerializableErrorInfo


def failures(result: dg.ExecuteInProcessResult) -> str:
    """Every failed step with its error (and causes), and the run's own failure if it has one, with the
    exception that ended it: pytest-timeout's ``Failed: Timeout`` raised inside a run is a run-level
    exception, and the run's message alone ("An exception was thrown during execution") hid it."""
    out = []
    for event in result.get_step_failure_events():
        out.append(f"step {event.step_key}: " + _chain(event.step_failure_data.error))
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.RUN_FAILURE:
            data = event.event_specific_data
            error = data.error if isinstance(data, JobFailureData) else None
            out.append(f"run: {event.message}" + (f" ← {_chain(error)}" if error is not None else ""))
    return "\n".join(out) or "no step failed and the run has no failure event"


def _chain(error: SerializableErrorInfo | None) -> str:
    """An error's message (it names its class), then each cause's."""
    messages = []
    while error is not None:
        messages.append(error.message.strip())
        error = error.cause
    return " ← ".join(messages)
