"""Properties of the long-term statistics import's row parsers (recorder/WebSocket rows → rollup lines):
hostile metadata and values are refused with a reason, never a crash; every line written reads back; a
gauge's mean and a meter's consumption are the values the recorder holds, converted by the kind's own
reference conversion."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from ingest_worker.importers.statistics_rows import Carry, KnownEntity, StatisticMeta, lines_of, plan
from ingest_worker.importers.statistics_ws import _row
from ingest_worker.rejections import Rejected
from tests.ha_strategies import NUMERIC_KINDS, Kind, any_text, examples, hostile_json, object_ids, outcome_of
from tests.lineprotocol_reader import read_line

values = st.none() | st.floats() | st.sampled_from([1e308, -1e308, 5e-324])
metas = st.builds(StatisticMeta, st.integers(), any_text | st.from_regex(r"sensor\.[a-z0-9_]{1,20}", fullmatch=True),
                  any_text | st.none() | st.sampled_from(["kWh", "Wh", "°F", "%", "W"]), st.booleans(), st.booleans())
knowns = st.none() | st.builds(KnownEntity, st.sampled_from(["temperature", "energy", "state"]),
                                any_text | st.none(), st.sampled_from(["°C", "kWh", "W"]) | st.none())
starts = st.floats() | st.sampled_from([1.7e9, -1e12, 1e12])


@examples(200)
@given(metas, knowns, st.sampled_from(["1h", "5m"]),
       st.lists(st.tuples(starts, values, values, values, values, values, values), max_size=4))
def test_hostile_statistics_are_refused_with_a_reason_and_every_line_reads_back(
        meta: StatisticMeta, known: KnownEntity | None, window: str,
        rows: list[tuple[float, float | None, float | None, float | None, float | None, float | None, float | None]],
) -> None:
    target = outcome_of(lambda: plan(meta, known, window))
    if isinstance(target, Rejected):
        return
    carry: Carry | None = None
    for row in rows:
        made = outcome_of(lambda row=row, carry=carry: lines_of(target, row, carry, window))  # type: ignore[misc]
        if isinstance(made, Rejected):
            continue
        lines, carry = made
        for line in lines:
            fields = read_line(line).fields
            assert all(isinstance(v, int) or math.isfinite(v) for v in fields.values() if not isinstance(v, str))


@examples(200)
@given(hostile_json())
def test_any_websocket_statistics_entry_is_a_row_of_numbers_or_nothing(entry: object) -> None:
    row = _row(entry)
    assert row is None or all(v is None or isinstance(v, float) for v in row)


@examples(200)
@given(st.sampled_from([k for k in NUMERIC_KINDS if k.unit not in ("%",)]), object_ids,
       st.lists(st.floats(min_value=0, max_value=1e7, allow_nan=False), min_size=2, max_size=5))
def test_gauges_and_meters_read_back_as_the_recorder_holds_them(kind: Kind, object_id: str,
                                                               sums: list[float]) -> None:
    assert kind.convert is not None
    meta = StatisticMeta(1, f"sensor.{object_id}", kind.unit, has_mean=True, has_sum=True)
    target = plan(meta, None, "1h")
    carry: Carry | None = None
    previous: float | None = None
    for index, total in enumerate(sums):
        start = 1_764_496_800.0 + 3_600 * index
        lines, carry = lines_of(target, (start, total, total, total, None, total, total), carry, "1h")
        gauge, counter = (read_line(line) for line in lines)
        assert gauge.time_ns == counter.time_ns == int(start) * 10**9
        assert math.isclose(gauge.fields["mean"], kind.convert(total), rel_tol=1e-12, abs_tol=1e-9)  # type: ignore[arg-type]
        consumed = kind.convert(total) - (kind.convert(previous) if previous is not None else 0.0)
        assert math.isclose(counter.fields["consumption"], consumed, rel_tol=1e-9, abs_tol=1e-6)  # type: ignore[arg-type]
        previous = total
