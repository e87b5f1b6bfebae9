"""Cells of a recorder's SQLite file read as numbers, or the reason they cannot be.

SQLite stores what it is given: a REAL column of a damaged or hand-edited recorder can hold text or a
blob, which `float()` would raise on and end the import. A cell that is not a number is the row's dead
letter instead (`Rejected`, naming the column and the value), the rest of the file imports. PostgreSQL and
MySQL recorders cannot hold such cells; their rows read the same.

A row whose keyset time (`start_ts`, `last_updated_ts`) is not a number sorts after every number in
SQLite (and every later row of the page with it): no float position can pass it, so the page that meets
one is the stream's last, its text-timed rows dead letters (a later run reaching the end again letters
them again).
"""

from __future__ import annotations

import json
import math

from ingest_worker.rejections import Reason, Rejected

SHOWN_CHARS = 80  # of a refused cell, in the detail


def is_number(value: object) -> bool:
    """Whether the cell is a number SQLite returned as one (a bool never comes from SQLite)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def number(value: object, column: str, reason: Reason = Reason.NON_NUMERIC) -> float | None:
    """The cell as a float (NULL: None); anything else is the row's dead letter, naming `column`."""
    if value is None:
        return None
    if is_number(value):
        return float(value)  # type: ignore[arg-type]  # is_number: int or float
    raise Rejected(reason, f"recorder column {column} holds {shown(value)} ({type(value).__name__}), not a number: "
                           "the recorder file is damaged there")


def json_cell(value: object) -> object:
    """The cell as JSON can carry it in a dead letter's payload: numbers and text as they are, a blob as
    text (undecodable bytes escaped), a non-finite float as its name."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def shown(value: object) -> str:
    text = json.dumps(json_cell(value), ensure_ascii=False)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"
