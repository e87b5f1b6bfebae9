"""Every default and tuning number of the simulator in one place, so a reader sees what can be changed
(most are CLI options, see `python -m ha_simulator --help`) and why each value was chosen.
"""

from __future__ import annotations

from typing import Final

# --- the fleet -------------------------------------------------------------------------------------
DEFAULT_DEVICES: Final = 50
MAX_DEVICES: Final = 10_000
DEFAULT_SEED: Final = 42

# --- topics, as Home Assistant, zigbee2mqtt and their default configurations name them -------------
DEFAULT_STATESTREAM_BASE: Final = "homeassistant/statestream"
DEFAULT_EVENTSTREAM_TOPIC: Final = "homeassistant/events"
DEFAULT_DISCOVERY_PREFIX: Final = "homeassistant"
DEFAULT_ZIGBEE_BASE: Final = "zigbee2mqtt"
# Home Assistant's birth message lives under the discovery prefix (`<prefix>/status`).
STATUS_SUFFIX: Final = "status"
STATUS_ONLINE: Final = b"online"
EVENTSTREAM_TOPIC_ENV: Final = "HATS_EVENTSTREAM_TOPIC"

# --- behaviour that makes the data realistic (and the ingest path honest) --------------------------
# A small share of readings arrives minutes late (a bridge that buffered them) ...
DEFAULT_LATE_FRACTION: Final = 0.01
LATE_DELAY_MIN_S: Final = 120.0
LATE_DELAY_MAX_S: Final = 900.0
# ... and a small share after the device's next reading (out of order for that entity).
DEFAULT_OUT_OF_ORDER_FRACTION: Final = 0.01
OUT_OF_ORDER_EXTRA_MIN_S: Final = 1.0
OUT_OF_ORDER_EXTRA_MAX_S: Final = 5.0
MAX_DELAY_FRACTION: Final = 0.5
# Devices drop off the network (Zigbee range, dead Wi-Fi, restarts): `unavailable`, then back.
DEFAULT_DROPOUTS_PER_HOUR: Final = 0.02
DROPOUT_MIN_S: Final = 120.0
DROPOUT_MAX_S: Final = 1_200.0
MAX_EVENT_PROBABILITY: Final = 0.5
# Energy meters lose their counter now and then (firmware update, power cut): a new cycle from ~0.
DEFAULT_METER_RESETS_PER_DAY: Final = 1.0
METER_RESET_AFTER_DROPOUT_PROBABILITY: Final = 0.25
METER_RESET_MAX_WH: Final = 5.0
# Some Home Assistant versions JSON-quote the statestream state (`"on"`): this share of devices does.
QUOTED_STATE_FRACTION: Final = 0.2
# mqtt_eventstream carries every event type; this share of eventstream readings is preceded by a
# `call_service` event that a state-only consumer must ignore.
OTHER_EVENT_FRACTION: Final = 0.02
# Real mqtt_statestream republishes every attribute with every state; "once" publishes them at start.
STATESTREAM_ATTRIBUTES_ONCE: Final = "once"
STATESTREAM_ATTRIBUTES_ALWAYS: Final = "always"

# --- cadence jitter: devices drift around their nominal reporting interval -------------------------
CADENCE_JITTER: Final = 0.1

# --- publishing ------------------------------------------------------------------------------------
PROGRESS_EVERY_S: Final = 5.0
LIVE_TICK_S: Final = 0.2
# The pacer sleeps only once it is this far ahead of the rate cap (fewer, longer sleeps).
PACER_MIN_SLEEP_S: Final = 0.005
# Credit an idle pacer may save up (seconds of `--rate`): bursts stay short.
PACER_BURST_S: Final = 0.1
