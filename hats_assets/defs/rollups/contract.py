"""The rollup data contract in InfluxDB (retention policy ``rollup``), read by the warehouse and tests.

Measurements ``gauge_<window>`` and ``counter_<window>`` for windows 1m, 5m, 1h; tags ``entity_id``
and ``quantity`` (the raw measurement: temperature, power, energy…), so a window's rows of every
quantity re-aggregate in ONE InfluxQL statement. Fields:

* gauges: ``mean`` (time-weighted over available time), ``min``, ``max``, ``count`` (integer: raw
  points), ``last`` (last value held while available), ``available_s`` (the weight that makes coarser
  means exact: sum of mean x available_s over sum of available_s), ``last_seen_s`` (epoch s of the
  last point; absent when the window had none);
* counters: ``consumption``, ``count``, ``resets`` (integers), ``last``, ``available_s``, ``last_seen_s``.
"""

from __future__ import annotations

from typing import Final, Literal

from hats_assets.defs.rollups.maths import WINDOW_1H_NS, WINDOW_1M_NS, WINDOW_5M_NS

Kind = Literal["gauge", "counter"]
KINDS: Final[tuple[Kind, ...]] = ("gauge", "counter")
WINDOWS_NS: Final = {"1m": WINDOW_1M_NS, "5m": WINDOW_5M_NS, "1h": WINDOW_1H_NS}
# Home Assistant's statistics treat these state classes as meters; everything else numeric is a gauge.
COUNTER_STATE_CLASSES: Final = ("total", "total_increasing")
TAG_KEYS: Final = ("entity_id", "quantity")
GAUGE_FIELDS: Final = ("mean", "min", "max", "count", "last", "available_s", "last_seen_s")
COUNTER_FIELDS: Final = ("consumption", "count", "resets", "last", "available_s", "last_seen_s")
INTEGER_FIELDS: Final = frozenset({"count", "resets"})


def measurement(kind: Kind, window: str) -> str:
    if kind not in KINDS or window not in WINDOWS_NS:
        raise ValueError(f"no rollup measurement for kind {kind!r} and window {window!r}")
    return f"{kind}_{window}"
