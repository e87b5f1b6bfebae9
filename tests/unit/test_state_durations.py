"""Time in each state and entries into it, against a reference that walks the states one by one.

The reference (``tests/rollup_reference.py``) walks a plain list of (start, end, state) intervals one at
a time; durations are integers, so agreement is exact.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from hats_assets.defs.rollups.contract import (
    BINARY_WORDS,
    DEFAULT_BINARY_WORDS,
    MAX_STATES_PER_HOUR,
    OTHER_STATE,
    TWO_STATE_QUANTITIES,
)
from hats_assets.defs.rollups.maths import NS_PER_S, WINDOW_1H_NS
from hats_assets.defs.rollups.state_durations import state_names, state_windows
from ingest_worker.normalise import BINARY_DOMAINS, BINARY_STATES, TWO_STATE_MEASUREMENTS
from tests.rollup_reference import StateRows, bound_reference, state_reference

H = WINDOW_1H_NS
T0 = 1_764_547_200 * NS_PER_S  # 2025-12-01 00:00 UTC, aligned to the hour

def as_rows(frame: object) -> StateRows:
    import pandas as pd

    assert isinstance(frame, pd.DataFrame)
    return {(int(w), str(s)): (int(d), int(n))
            for w, s, d, n in frame[["window_start", "state", "duration_ns", "entries"]].itertuples(index=False)}


def test_a_door_across_an_hour_boundary() -> None:
    events = [(T0 + 10 * NS_PER_S, "on"), (T0 + 70 * NS_PER_S, "off"), (T0 + H - NS_PER_S, "on"),
              (T0 + H + 30 * NS_PER_S, "on"), (T0 + H + 90 * NS_PER_S, "off")]
    frame = state_windows([t for t, _ in events], [s for _, s in events], T0, T0 + 2 * H, H, carry="off")
    assert as_rows(frame) == {
        (T0, "off"): (H - 61 * NS_PER_S, 1),  # 0–10 s carried in (no entry), then 70 s … H−1 s
        (T0, "on"): (61 * NS_PER_S, 2),  # 10–70 s and the hour's last second
        (T0 + H, "on"): (90 * NS_PER_S, 0),  # carried over the boundary: not an entry; the repeat is not one
        (T0 + H, "off"): (H - 90 * NS_PER_S, 1),
    }


def test_the_first_point_ever_is_not_an_entry_and_time_before_it_is_not_covered() -> None:
    frame = state_windows([T0 + 600 * NS_PER_S], ["heat"], T0, T0 + H, H, carry=None)
    assert as_rows(frame) == {(T0, "heat"): (H - 600 * NS_PER_S, 0)}


def test_unavailable_is_a_state_so_the_hour_sums_to_its_covered_time() -> None:
    times = [T0, T0 + 100 * NS_PER_S, T0 + 400 * NS_PER_S, T0 + 500 * NS_PER_S]
    states = ["on", "unavailable", "on", "unknown"]
    rows = as_rows(state_windows(times, states, T0, T0 + H, H, carry="on"))
    assert rows == {(T0, "on"): (200 * NS_PER_S, 1), (T0, "unavailable"): (300 * NS_PER_S, 1),
                    (T0, "unknown"): (H - 500 * NS_PER_S, 1)}
    assert sum(d for d, _ in rows.values()) == H


def test_a_free_text_entity_is_bounded_with_the_rest_as_other() -> None:
    times = [T0 + i * 60 * NS_PER_S + (i % 7) * NS_PER_S for i in range(60)]
    texts = [f"message {i}" for i in range(60)]
    frame = state_windows(times, texts, T0, T0 + H, H, carry="boot", max_states=MAX_STATES_PER_HOUR)
    assert len(frame) == MAX_STATES_PER_HOUR + 1
    assert frame["state"].iloc[-1] == OTHER_STATE
    want = state_reference(list(zip(times, texts, strict=True)), T0, T0 + H, H, "boot")
    assert as_rows(frame) == bound_reference(want, MAX_STATES_PER_HOUR, OTHER_STATE)
    ordered = sorted(want.items(), key=lambda kv: (-kv[1][0], kv[0][1]))
    assert frame["state"].tolist()[:MAX_STATES_PER_HOUR] == [k[1] for k, _ in ordered[:MAX_STATES_PER_HOUR]]
    assert int(frame["duration_ns"].sum()) == H


@pytest.mark.parametrize("seed", range(30))
def test_random_series_agree_exactly_with_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    hours = rng.randint(1, 30)
    end = T0 + hours * H
    times = sorted(rng.sample(range(T0, end), rng.randint(0, 200)))
    words = ["on", "off", "unavailable", "heat", "cool"][: rng.randint(1, 5)]
    states = [rng.choice(words) for _ in times]
    carry = rng.choice([None, *words])
    frame = state_windows(times, states, T0, end, H, carry=carry, max_states=len(words))
    assert as_rows(frame) == state_reference(list(zip(times, states, strict=True)), T0, end, H, carry)
    # Bounded harder than there are words: the same as bounding the reference.
    tight = state_windows(times, states, T0, end, H, carry=carry, max_states=2)
    assert as_rows(tight) == state_reference(list(zip(times, states, strict=True)), T0, end, H, carry, 2, OTHER_STATE)
    # Covered time per window is the window, except before the first known state.
    for w, total in frame.groupby("window_start")["duration_ns"].sum().items():
        first = times[0] if times else end
        assert total == (H if carry is not None or int(str(w)) >= first else int(str(w)) + H - first)


def test_a_series_with_nothing_known_has_no_rows() -> None:
    assert state_windows([], [], T0, T0 + H, H, carry=None).empty


@pytest.mark.parametrize(("times", "states", "message"), [
    ([T0 + 5, T0 + 5], ["a", "b"], "strictly increasing"),
    ([T0 - 1], ["a"], "inside"),
    ([T0], ["a", "b"], "equal length"),
])
def test_bad_input_raises(times: list[int], states: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        state_windows(times, states, T0, T0 + H, H)


def test_two_state_points_are_named_with_their_domain_words() -> None:
    nan = float("nan")
    assert state_names("binary", "binary_sensor.door", [1.0, 0.0, nan], [None, None, "unavailable"]).tolist() == [
        "on", "off", "unavailable"]
    assert state_names("binary", "cover.garage", [1.0, 0.0, nan], [None, None, "opening"]).tolist() == [
        "open", "closed", "opening"]
    assert state_names("binary", "lock.front", [nan, nan], ["locked", "unlocked"]).tolist() == ["locked", "unlocked"]
    assert state_names("state", "sensor.mode", [3.0, 21.5, nan], [None, None, "eco"]).tolist() == ["3", "21.5", "eco"]
    with pytest.raises(ValueError, match="a value or a text"):
        state_names("state", "sensor.mode", [nan], [None])


def test_the_words_are_the_ones_the_worker_writes_as_one_and_zero() -> None:
    """Naming must invert ingest_worker/normalise.py's BINARY_STATES for every two-state domain."""
    assert frozenset(TWO_STATE_MEASUREMENTS) == TWO_STATE_QUANTITIES
    for domain in [*BINARY_DOMAINS, *BINARY_WORDS]:
        off, on = BINARY_WORDS.get(domain, DEFAULT_BINARY_WORDS)
        assert (BINARY_STATES[off], BINARY_STATES[on]) == (0.0, 1.0), domain
    assert np.array_equal(state_names("availability", "homeassistant.status", [1.0, 0.0], [None, None]),
                          np.array(["online", "offline"], dtype=object))
