"""An InfluxDB 1.x line-protocol reader written for the tests, independent of `ingest_worker.lineprotocol`.

The fuzz properties (tests/unit/test_fuzz_*.py, bench/fuzz.py) round-trip every accepted value through the
worker's encoder and back through this reader. It follows InfluxDB 1.x's own parser (models/points.go), as
probed against the stack's InfluxDB 1.6: a delimiter (`,` `=` space, `"` in a string field) is escaped
when the character before it is a backslash; unescaping replaces `\\,` `\\=` `\\ ` in keys and tag values
(`\\,` `\\ ` in the measurement) and `\\"` `\\\\` in string fields; any other backslash is literal. Tabs and
NULs before a line's measurement are skipped as InfluxDB skips them; a line starting with `#` is a comment
InfluxDB skips, so for a writer it is a lost point: refused here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

# What InfluxDB 1.x skips before a line's measurement (its skipWhitespace).
SKIPPED = " \t\x00"


class Unreadable(ValueError):
    """The line is not one InfluxDB would store as the point the writer meant."""


@dataclass(frozen=True, slots=True)
class Line:
    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: dict[str, float | int | str]
    time_ns: int


def _split(text: str, delimiter: str) -> list[str]:
    """`text` split at each `delimiter` that no backslash precedes (InfluxDB's one-character look-behind)."""
    parts, start = [], 0
    for index, char in enumerate(text):
        if char == delimiter and (index == 0 or text[index - 1] != "\\"):
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _unescape(text: str, chars: str) -> str:
    for char in chars:
        text = text.replace("\\" + char, char)
    return text


def _key(text: str, what: str) -> str:
    if not text:
        raise Unreadable(f"empty {what}")
    if text.endswith("\\"):
        raise Unreadable(f"{what} {text!r} ends with a backslash (it would escape the delimiter after it)")
    return _unescape(text, ",= ")


def _string_field(text: str) -> str:
    if len(text) < 2 or not text.startswith('"') or not text.endswith('"'):
        raise Unreadable(f"string field {text!r} is not double-quoted")
    out, index, body = [], 0, text[1:-1]
    while index < len(body):
        char = body[index]
        if char == "\\":
            if index + 1 == len(body):
                raise Unreadable(f"string field {text!r} ends with an escaping backslash")
            following = body[index + 1]
            out.append(following if following in '"\\' else char + following)
            index += 2
            continue
        if char == '"':
            raise Unreadable(f"unescaped quote inside string field {text!r}")
        out.append(char)
        index += 1
    return "".join(out)


def _field_value(text: str) -> float | int | str:
    if text.startswith('"'):
        return _string_field(text)
    if text.endswith("i"):
        return int(text[:-1])
    if text in ("t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"):
        raise Unreadable(f"boolean field {text!r}: the contract writes floats and strings only")
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise Unreadable(f"non-finite field {text!r}")
    return value


def _cuts(text: str, delimiter: str, start_quoted_after: int = -1) -> list[int]:
    """Where `delimiter` splits `text`: outside string fields an unescaped one (no backslash right before
    it); inside a string field (opened by `"` after `=`, from `start_quoted_after` on) a backslash escapes
    the next character and `"` closes it, as InfluxDB scans both."""
    cuts, index, quoted = [], 0, False
    while index < len(text):
        char = text[index]
        if quoted:
            if char == "\\":
                index += 2
                continue
            quoted = char != '"'
        elif char == '"' and index > start_quoted_after >= 0 and text[index - 1] == "=":
            quoted = True
        elif char == delimiter and (index == 0 or text[index - 1] != "\\"):
            cuts.append(index)
        index += 1
    if quoted:
        raise Unreadable(f"unterminated string field in {text[:120]!r}")
    return cuts


def _sections(line: str) -> tuple[str, str, str]:
    """measurement+tags, fields, timestamp: split at the spaces outside escapes and string fields."""
    head_end = _cuts(line, " ")[:1]
    if not head_end:
        raise Unreadable(f"no field set: {line[:120]!r}")
    cuts = [head_end[0], *(c for c in _cuts(line, " ", head_end[0]) if c > head_end[0])]
    if len(cuts) != 2:
        raise Unreadable(f"expected 3 space-separated sections, found {len(cuts) + 1}: {line[:120]!r}")
    return line[:cuts[0]], line[cuts[0] + 1:cuts[1]], line[cuts[1] + 1:]


def read_line(line: str) -> Line:
    """One line, as InfluxDB 1.x would store it; `Unreadable` when it would not (or not as meant)."""
    if "\n" in line or "\r" in line:
        raise Unreadable("a line holds no newline")
    line = line.lstrip(SKIPPED)
    if line.startswith("#"):
        raise Unreadable("a line starting with '#' is a comment: InfluxDB skips it")
    head, fields_text, stamp = _sections(line)
    series = _split(head, ",")
    measurement = series[0]
    if not measurement or measurement.endswith("\\"):
        raise Unreadable(f"bad measurement {measurement!r}")
    tags: list[tuple[str, str]] = []
    for pair in series[1:]:
        parts = _split(pair, "=")
        if len(parts) != 2:
            raise Unreadable(f"tag {pair!r} is not key=value")
        tags.append((_key(parts[0], "tag key"), _key(parts[1], "tag value")))
    fields: dict[str, float | int | str] = {}
    for pair in _split_fields(fields_text):
        name, _, value = pair.partition("=")
        fields[_key(name, "field key")] = _field_value(value)
    if not stamp.lstrip("-").isdigit():
        raise Unreadable(f"timestamp {stamp!r} is not an integer")
    return Line(_unescape(measurement, ", "), tuple(tags), fields, int(stamp))


def _split_fields(text: str) -> list[str]:
    """Field pairs at the commas outside string fields."""
    bounds = [-1, *_cuts(text, ",", 0), len(text)]
    pairs = [text[a + 1:b] for a, b in itertools.pairwise(bounds)]
    if any("=" not in pair for pair in pairs):
        raise Unreadable(f"bad field set {text[:120]!r}")
    return pairs
