"""What a failed Dagster run in a test says about itself, for the assertion's message: a bare
``assert result.success`` on a CI machine prints only ``False``; these say which step failed and why."""

from __future__ import annotations

import dagster as dg


def failures(result: dg.ExecuteInProcessResult) -> str:
    """Every failed step with its error (and causes), and the run's own failure if it has one."""
    out = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        messages = []
        while error is not None:
            messages.append(error.message.strip())
            error = error.cause
        out.append(f"step {event.step_key}: " + " ← ".join(messages))
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.RUN_FAILURE:
            out.append(f"run: {event.message}")
    return "\n".join(out) or "no step failed and the run has no failure event"
