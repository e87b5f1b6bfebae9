"""The rollup data contract in InfluxDB (retention policy ``rollup``), read by the warehouse and tests.

Measurements ``gauge_<window>`` and ``counter_<window>`` for windows 1m, 5m, 1h; tags ``entity_id``
and ``quantity`` (the raw measurement: temperature, power, energy…), so a window's rows of every
quantity re-aggregate in ONE InfluxQL statement. Fields:

* gauges: ``mean`` (time-weighted over available time), ``min``, ``max``, ``count`` (integer: raw
  points), ``last`` (last value held while available), ``available_s`` (the weight that makes coarser
  means exact: sum of mean x available_s over sum of available_s), ``last_seen_s`` (epoch s of the
  last point; absent when the window had none);
* counters: ``consumption``, ``count``, ``resets`` (integers), ``last``, ``available_s``, ``last_seen_s``.

Time in each state (``state_durations.py``): measurement ``state_1h``, per entity, UTC hour and state of
two-state entities (raw measurements ``binary``/``availability``, 1/0 named with the domain's own words:
on/off, open/closed for covers, online/offline) and of entities with text states (enum sensors,
input_select, climate modes…). Tags ``entity_id``, ``quantity`` (as above) and ``rank`` (``0``… the
state's place in the hour by time held, so an entity has at most ``MAX_STATES_PER_HOUR + 1`` series
whatever texts it sends: a state name as a tag would add a series per new text forever). Fields:
``state`` (string: its name; ``unavailable``/``unknown`` are states here, so an hour's durations sum to
the time it was covered; beyond ``MAX_STATES_PER_HOUR`` states the rest are one ``(other)`` row),
``duration_ns`` and ``entries`` (integers: exact time held, changes into the state).
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

STATE_MEASUREMENT: Final = "state_1h"
STATE_TAG_KEYS: Final = ("entity_id", "quantity", "rank")
STATE_FIELDS: Final = ("state", "duration_ns", "entries")
# Raw measurements whose points are 1/0 (ingest_worker/normalise.py: TWO_STATE_MEASUREMENTS, BINARY_STATES).
TWO_STATE_QUANTITIES: Final = frozenset({"binary", "availability"})
# The words a two-state point (0, 1) is named with, by entity domain; any other domain says off/on.
BINARY_WORDS: Final = {"cover": ("closed", "open"), "homeassistant": ("offline", "online")}
DEFAULT_BINARY_WORDS: Final = ("off", "on")
# A free-text sensor (a timestamp, a message) must not make one row per distinct text: per entity and
# hour the states longest held are kept and the rest summed into OTHER_STATE.
MAX_STATES_PER_HOUR: Final = 10
OTHER_STATE: Final = "(other)"


def measurement(kind: Kind, window: str) -> str:
    if kind not in KINDS or window not in WINDOWS_NS:
        raise ValueError(f"no rollup measurement for kind {kind!r} and window {window!r}")
    return f"{kind}_{window}"
