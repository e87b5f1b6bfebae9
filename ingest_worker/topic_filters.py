"""MQTT topic filters as the broker reads them: whether one is well formed, covers a topic, or overlaps another.

Why the worker needs this: it subscribes to discovery devices' state topics in bulk
(`HATS_DISCOVERY_STATE_FILTERS`), before their configs name them. A learned state topic such a filter
covers must not be subscribed again, and such a filter must not overlap another source's: with two
matching subscriptions an MQTT 5 session gets each message twice (measured on Mosquitto 2.0: two
deliveries; under 3.1.1, one), and a state without its own timestamp would then be two points.
"""

from __future__ import annotations

from paho.mqtt.client import topic_matches_sub


def problem(topic_filter: str) -> str | None:
    """Why `topic_filter` is not a filter a worker may subscribe to, or None."""
    if not topic_filter:
        return "an empty filter"
    if topic_filter.startswith(("$", "/")):
        return f"{topic_filter!r} starts with '$' or '/'"
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return f"{topic_filter!r}: '#' must be a whole level, the last one"
        if "+" in level and level != "+":
            return f"{topic_filter!r}: '+' must be a whole level"
    if levels[0] in ("#", "+"):
        return f"{topic_filter!r} starts with a wildcard: it would read every topic"
    return None


def covers(topic_filter: str, topic: str) -> bool:
    return bool(topic_matches_sub(topic_filter, topic))


def overlap(first: str, second: str) -> bool:
    """Whether some topic matches both filters."""
    a, b = first.split("/"), second.split("/")
    for index in range(max(len(a), len(b))):
        x = a[index] if index < len(a) else None
        y = b[index] if index < len(b) else None
        if x == "#" or y == "#":
            return True
        if x is None or y is None:
            return False
        if x != y and "+" not in (x, y):
            return False
    return True
