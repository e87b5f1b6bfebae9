"""Property: any point the encoder accepts reads back exactly; any it refuses is refused with a reason."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from ingest_worker.contract import Point
from ingest_worker.rejections import Rejected
from tests.ha_strategies import any_text, examples, line_of
from tests.lineprotocol_reader import read_line

times = st.integers(min_value=-(2**63) + 2, max_value=2**63 - 2)
tags = st.lists(st.tuples(any_text, any_text), max_size=4).map(tuple)
points = st.builds(Point, any_text, tags, times, st.floats() | st.none(), any_text | st.none())


@examples(300)
@given(points)
@example(Point("#comment", (("entity_id", "sensor.x"),), 1, value=1.0))  # InfluxDB skips a '#' line: refused
@example(Point("state", (("device_id", "a\\ b"),), 1, value=1.0))
@example(Point("state", (("device_id", "a\\\\"),), 1, value=1.0))
@example(Point("state", (("entity_id", "sensor.x"),), 1, state='\\"\\'))
def test_every_point_is_refused_with_a_reason_or_reads_back_exactly(point: Point) -> None:
    line_of(point)


@examples(200)
@given(st.text(st.characters(), max_size=60), st.text(st.characters(), max_size=60))
def test_tag_values_and_states_with_any_text_round_trip(tag_value: str, state: str) -> None:
    point = Point("state", (("device_id", tag_value), ("entity_id", "sensor.x")), 1_700_000_000_000_000_000,
                  state=state)
    outcome = line_of(point)
    if not isinstance(outcome, Rejected):
        assert read_line(f"x,device_id={_escaped(tag_value)} value=1.0 1").tags == (("device_id", tag_value),)


def _escaped(text: str) -> str:
    """The escaping written out by hand (the reader must agree with it too)."""
    return text.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")
