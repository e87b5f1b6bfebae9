"""great-expectations 1.x, imported only when a check runs.

``import great_expectations`` costs ~6 s here, so nothing imports it at module level: the code location
loads without it (a test asserts that) and the worker never sees it. One ephemeral context per process,
progress bars off (they would flood the run logs).
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

import pandas as pd


@cache
def _batch_definition() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context.data_sources.add_pandas("hats").add_dataframe_asset("frame").add_batch_definition_whole_dataframe(
        "whole")


def warm_up() -> threading.Thread:
    """Import GX and build the context on a background thread while a rollup computes: the rollup waits on
    InfluxDB most of the time, so the ~5 s import of the checks that follow in the same run is hidden."""
    thread = threading.Thread(target=_batch_definition, name="gx-warm-up", daemon=True)
    thread.start()
    return thread


def failing_rows(frame: pd.DataFrame, expectation: str, **kwargs: Any) -> list[int]:
    """Validate ``frame`` against one GX expectation (class name and its arguments); the failing row
    positions (empty when it passes)."""
    import great_expectations as gx

    if frame.empty:
        return []
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame.reset_index(drop=True)})
    result = batch.validate(getattr(gx.expectations, expectation)(**kwargs), result_format="COMPLETE")
    if result.success:
        return []
    return [int(i) for i in result.result.get("unexpected_index_list") or []]
