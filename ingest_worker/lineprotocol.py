"""InfluxDB line protocol, encoded exactly.

A small encoder of our own rather than influxdb-client's `Point`: that one writes Python ints as
integer fields (`3i`), which conflicts with the float `value` field the contract promises.
"""

from __future__ import annotations

import math

from ingest_worker.contract import STATE_FIELD, VALUE_FIELD, Point
from ingest_worker.rejections import Reason, Rejected

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING = str.maketrans({'"': r"\"", "\\": "\\\\"})
COMMENT = "#"  # a line that starts with it is a comment to InfluxDB
SKIPPED = "\t\x00"  # InfluxDB skips these before a line's measurement (a space there is escaped)


def _check(text: str, what: str) -> str:
    if not text:
        raise Rejected(Reason.UNWRITABLE, f"empty {what}")
    if "\n" in text or "\r" in text:
        raise Rejected(Reason.UNWRITABLE, f"newline in {what} {text[:40]!r}")
    if text.endswith("\\"):
        raise Rejected(Reason.UNWRITABLE, f"trailing backslash in {what} {text[:40]!r}")
    _utf8(text, what)
    return text


def _utf8(text: str, what: str) -> None:
    """JSON can carry lone surrogates (`"\\ud800"`) that no UTF-8 body can: refuse the line, not the batch."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise Rejected(Reason.UNWRITABLE, f"{what} {text[:40]!r} is not encodable as UTF-8") from None


def series_key(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    """The escaped `measurement,tag=value,…` part: the same for every point of a series, so callers cache it."""
    if measurement.startswith(COMMENT) or measurement[:1] in tuple(SKIPPED):
        # InfluxDB 1.x reads a '#' line as a comment (answers 204, stores nothing: a silent loss) and skips
        # tabs and NULs before the measurement (another name, or "missing measurement").
        raise Rejected(Reason.UNWRITABLE, f"measurement {measurement[:40]!r} starts with {measurement[:1]!r}")
    parts = [_check(measurement, "measurement").translate(_MEASUREMENT)]
    for key, value in tags:
        parts.append(f"{_check(key, 'tag key').translate(_KEY)}={_check(value, 'tag value').translate(_KEY)}")
    return ",".join(parts)


def string_field(text: str, what: str = "string field") -> str:
    """A string field value, quoted and escaped (a newline in it would end the line: refused)."""
    if "\n" in text or "\r" in text:
        raise Rejected(Reason.UNWRITABLE, f"newline in {what} {text[:40]!r}")
    _utf8(text, what)
    return f'"{text.translate(_STRING)}"'


def encode(point: Point, head: str | None = None) -> str:
    """One line; `head` is `series_key(point.measurement, point.tags)` when the caller has it cached."""
    if head is None:
        head = series_key(point.measurement, point.tags)
    if point.value is not None:
        if not math.isfinite(point.value):
            raise Rejected(Reason.NON_FINITE, f"{point.value!r} cannot be written to InfluxDB")
        field = f"{VALUE_FIELD}={float(point.value)!r}"
    elif point.state is not None:
        field = f"{STATE_FIELD}={string_field(point.state, 'state')}"
    else:
        raise Rejected(Reason.SCHEMA, "a point needs a value or a state")
    return f"{head} {field} {point.time_ns}"
