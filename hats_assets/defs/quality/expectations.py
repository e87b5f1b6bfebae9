"""great-expectations 1.x, imported only when a check runs.

``import great_expectations`` costs ~6 s here, so nothing imports it at module level: the code location
loads without it (a test asserts that) and the worker never sees it. One ephemeral context per process,
progress bars off (they would flood the run logs).

A check serving many homes asks its expectations per home (``Expectations.ask``) and validates each
distinct expectation ONCE over every home's rows (``Expectations.validate``): one validation costs
~40 ms whatever its rows, so 100 homes × 8 validations were 32 s of a run. The expectations used are
row by row (a value, or a pair of values of the same row), so a row fails in the stacked frame exactly
when it fails in its home's own frame; each home gets back its own failing row positions.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
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


# The arguments of the row-by-row expectations that name the frame's columns.
COLUMN_ARGUMENTS = ("column", "column_A", "column_B")


@dataclass(slots=True)
class Asked:
    """One home's frame asked of one expectation; ``rows()`` once ``Expectations.validate`` has run."""

    frame: pd.DataFrame
    _rows: list[int] | None = None

    def rows(self) -> list[int]:
        """The failing row positions of this frame (empty when it passes)."""
        if self._rows is None:
            raise RuntimeError("Expectations.validate() has not run: the failing rows are not known yet")
        return self._rows


@dataclass(slots=True)
class Expectations:
    """The expectations a check asks of every home's frames, validated once per distinct expectation."""

    _asked: dict[tuple[str, tuple[tuple[str, Any], ...]], list[Asked]] = field(default_factory=dict)

    def ask(self, frame: pd.DataFrame, expectation: str, **kwargs: Any) -> Asked:
        """Ask ``expectation`` (a GX class name and its arguments, row by row) of ``frame``'s rows."""
        asked = Asked(frame.reset_index(drop=True))
        if asked.frame.empty:
            asked._rows = []
        else:
            self._asked.setdefault((expectation, tuple(sorted(kwargs.items()))), []).append(asked)
        return asked

    def validate(self) -> None:
        """Each distinct expectation once over the stacked rows of every frame that asked it; each frame
        gets its own failing positions back."""
        for (expectation, arguments), asked in self._asked.items():
            kwargs = dict(arguments)
            columns = [kwargs[name] for name in COLUMN_ARGUMENTS if name in kwargs]
            stacked = pd.concat([one.frame[columns] for one in asked], ignore_index=True)
            starts = np.cumsum([0] + [len(one.frame) for one in asked])
            failing = np.array(failing_rows(stacked, expectation, **kwargs), dtype=np.int64)
            owner = np.searchsorted(starts, failing, side="right") - 1
            for i, one in enumerate(asked):
                one._rows = sorted(int(row) for row in failing[owner == i] - starts[i])
        self._asked.clear()
