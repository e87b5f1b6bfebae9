"""Why a message could not become a point: the reason codes of the dead-letter store.

Codes are stable strings (operators count and filter by them); the detail says what exactly was wrong.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    SCHEMA = "schema"
    BAD_ENTITY_ID = "bad_entity_id"
    # A device_class becomes the measurement name, so it must be an identifier like HA's own classes.
    BAD_DEVICE_CLASS = "bad_device_class"
    BAD_TIMESTAMP = "bad_timestamp"
    NON_FINITE = "non_finite_value"
    UNWRITABLE = "unwritable_text"
    INFLUX_REJECTED = "influx_rejected"
    # A topic outside the layout its source expects (segments, length, wildcards in a learned topic).
    BAD_TOPIC = "bad_topic"
    # A discovery config naming a topic outside its home's prefix (e.g. under another home's): not subscribed.
    FOREIGN_TOPIC = "foreign_topic"
    # A discovery value_template beyond the small subset devices use (sources/templates.py).
    UNSUPPORTED_TEMPLATE = "unsupported_value_template"
    # A bounded registry (discovered entities, entities per state topic) is full.
    TOO_MANY_ENTITIES = "too_many_entities"
    SERIES_BUDGET = "series_budget"
    NON_NUMERIC = "non_numeric_value"
    TAG_TOO_LONG = "tag_too_long"
    # An imported statistic (Home Assistant's long-term statistics) in a unit that does not convert to
    # its quantity's canonical unit: none of its rows is written.
    UNCONVERTIBLE_UNIT = "unconvertible_unit"
    INTERNAL_ERROR = "internal_error"


class Rejected(Exception):
    """The message is invalid; it goes to the dead-letter store with this reason and detail."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
