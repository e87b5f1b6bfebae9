"""Home Assistant's long-term statistics as rows of the rollup contract: the pure part of the import.

A statistic (one `statistics_meta` row, or one entry of `recorder/list_statistic_ids`) becomes a `Plan`
once: its quantity, canonical unit and conversion, decided by the worker's own rules so an imported hour
and a live point of the same entity land on the same quantity in the same unit. Each of its rows then
becomes one or two lines (`imported_gauge_<w>` when it has a mean, `imported_counter_<w>` when it has a
sum) in the `rollup` policy, timestamp the row's `start`.

Meters need the row before: `consumption` is HA's `change` (this row's `sum` minus the previous row's, 0
before the first, as `recorder/statistics_during_period` computes it, in canonical units) and `resets`
compares `last_reset` and `state` with it. The caller carries a `Carry` per statistic from row to row,
and after a resume seeds it from the recorder's row before the first one it reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ingest_worker.contract import imported_measurement
from ingest_worker.lineprotocol import series_key
from ingest_worker.normalise import ENTITY_ID, measurement_for
from ingest_worker.rejections import Reason, Rejected
from ingest_worker.sources.websocket import epoch_to_ns
from ingest_worker.units import conversion_for, is_percent_class

WINDOW_S = {"1h": 3_600, "5m": 300}
# Home Assistant's recorder names an external statistic `<integration>:<id>` (valid_statistic_id); an
# entity's statistic is its entity_id. External ones belong to no entity: not imported (counted).
EXTERNAL_SEPARATOR = ":"
# (start_ts, mean, min, max, last_reset_ts, state, sum): the columns the readers hand over, floats or None.
Row = tuple[float, float | None, float | None, float | None, float | None, float | None, float | None]


@dataclass(frozen=True, slots=True)
class StatisticMeta:
    """What the recorder says of one statistic (`statistics_meta`; `mean_type` != 0 from schema 49 on is
    `has_mean`). `key` is the recorder's `metadata_id`, or the statistic_id itself over WebSocket."""

    key: int | str
    statistic_id: str
    unit: str | None
    has_mean: bool
    has_sum: bool
    source: str | None = None


@dataclass(frozen=True, slots=True)
class KnownEntity:
    """What `core.entities` knows of the entity (the states import or the live worker wrote it)."""

    measurement: str
    device_class: str | None
    unit_canonical: str | None


@dataclass(frozen=True, slots=True)
class Plan:
    statistic_id: str
    quantity: str
    unit: str | None  # canonical
    conversion: str | None
    convert: Callable[[float], float]
    gauge_head: str | None  # escaped `measurement,entity_id=…,quantity=…`, when the statistic has a mean
    counter_head: str | None  # … when it has a sum


@dataclass(slots=True)
class Carry:
    """The previous row of one statistic, in its recorder unit."""

    sum: float | None
    last_reset_ts: float | None
    state: float | None


def is_external(statistic_id: str) -> bool:
    return EXTERNAL_SEPARATOR in statistic_id


def plan(meta: StatisticMeta, known: KnownEntity | None, window: str) -> Plan:
    """How the statistic's rows are written, or `Rejected` (a dead letter; none of its rows is written).

    Quantity: the entity's measurement in core.entities, else what the worker derives from the unit
    (`measurement_for`, no device_class: statistics_meta has none). Unit: the worker's conversion of the
    statistic's unit; when core.entities knows the entity's canonical unit, the conversion must land on
    it (a temperature in kWh, or a °X, is refused). A unit the worker has no rule for, on an entity not
    known in another unit, passes unchanged, as the live worker passes it."""
    statistic_id = meta.statistic_id
    if not ENTITY_ID.fullmatch(statistic_id):
        raise Rejected(Reason.BAD_ENTITY_ID, f"statistic_id {statistic_id[:80]!r} is not domain.object_id")
    if not (meta.has_mean or meta.has_sum):
        raise Rejected(Reason.SCHEMA, f"{statistic_id} has neither a mean nor a sum (has_mean, has_sum false)")
    domain = statistic_id.split(".", 1)[0]
    device_class = known.device_class if known else None
    conversion = conversion_for(None if is_percent_class(device_class) else meta.unit)
    canonical = (conversion.unit or meta.unit) if meta.unit else None
    if known is not None:
        quantity = known.measurement
        if known.unit_canonical is not None and canonical != known.unit_canonical:
            raise Rejected(Reason.UNCONVERTIBLE_UNIT,
                           f"{statistic_id}: statistics unit {meta.unit!r} does not convert to "
                           f"{known.unit_canonical!r}, the canonical unit of its quantity {quantity!r} (core.entities)")
    else:
        quantity = measurement_for(domain, None, meta.unit)
    tags = (("entity_id", statistic_id), ("quantity", quantity))
    gauge = series_key(imported_measurement("gauge", window), tags) if meta.has_mean else None
    counter = series_key(imported_measurement("counter", window), tags) if meta.has_sum else None
    return Plan(statistic_id, quantity, canonical, conversion.name, conversion.apply, gauge, counter)


def _field(name: str, value: float | None, convert: Callable[[float], float], fields: list[str]) -> None:
    if value is not None:
        converted = float(convert(value))
        if not math.isfinite(converted):
            raise Rejected(Reason.NON_FINITE, f"{name} {value!r} cannot be written to InfluxDB")
        fields.append(f"{name}={converted!r}")


def lines_of(target: Plan, row: Row, carry: Carry | None, window: str) -> tuple[list[str], Carry]:
    """The row's lines (none when it holds no value) and the carry for the statistic's next row.

    `carry` None: no earlier row of the statistic exists. Raises `Rejected` for a value InfluxDB cannot
    store (the row is a dead letter; the carry then stays as it was)."""
    start_ts, mean, low, high, last_reset_ts, state, total = row
    convert = target.convert
    window_s = WINDOW_S[window]
    time_ns = epoch_to_ns(start_ts, "start_ts")
    lines: list[str] = []
    tail = f",count=0i,available_s={float(window_s)!r} {time_ns}"
    if target.gauge_head is not None:
        fields: list[str] = []
        _field("mean", mean, convert, fields)
        _field("min", low, convert, fields)
        _field("max", high, convert, fields)
        if fields:
            lines.append(f"{target.gauge_head} {','.join(fields)}{tail}")
    if target.counter_head is None:
        return lines, carry if carry is not None else Carry(None, None, None)
    fields = []
    if total is not None:
        before = carry.sum if carry is not None else None
        # HA: the previous row's sum in the display unit, 0 when there is none (not converted).
        consumption = float(convert(total)) - (float(convert(before)) if before is not None else 0.0)
        if not math.isfinite(consumption):
            raise Rejected(Reason.NON_FINITE, f"consumption from sum {total!r} cannot be written to InfluxDB")
        fields.append(f"consumption={consumption!r}")
    _field("last", state, convert, fields)
    _field("sum", total, convert, fields)
    if fields:
        fields.append(f"resets={_resets(row, carry, window_s)}i")
        lines.append(f"{target.counter_head} {','.join(fields)}{tail}")
    after = Carry(total if total is not None else (carry.sum if carry is not None else None), last_reset_ts, state)
    return lines, after


def _resets(row: Row, carry: Carry | None, window_s: int) -> int:
    """1 when the meter started a new cycle in the window: `last_reset` moved (meters with a last_reset
    attribute, and imported statistics), or — what HA's recorder records for a `total_increasing` meter,
    which keeps no last_reset — its state dropped while its sum did not."""
    start_ts, *_, last_reset_ts, state, total = row
    if carry is None:
        return int(last_reset_ts is not None and start_ts <= last_reset_ts < start_ts + window_s)
    if last_reset_ts is not None and last_reset_ts != carry.last_reset_ts:
        return 1
    dropped = state is not None and carry.state is not None and state < carry.state
    kept_sum = total is not None and carry.sum is not None and total >= carry.sum
    return int(dropped and kept_sum)

