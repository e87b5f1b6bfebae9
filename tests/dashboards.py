"""The Grafana dashboards' queries as tests read them (deploy/grafana/dashboards/*.json): every panel's PromQL
expressions and SQL, the metric names a PromQL expression reads, and a SQL panel made runnable (Grafana's
macros and variables replaced by a real range and home), so a test can hold each to what really exists."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from devstack.profile import PROJECT_ROOT

DASHBOARDS = PROJECT_ROOT / "deploy" / "grafana" / "dashboards"
PROMETHEUS_UID = "hats-prometheus"
POSTGRES_UID = "hats-postgres"

# PromQL words that are not metric names: functions and aggregations (followed by "("), keywords, modifiers.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
             "unless", "inf", "nan"}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSETS = re.compile(r"\b(?:offset|@)\s*-?[0-9a-z.]+")
_NUMBERS = re.compile(r"(?<![A-Za-z_:])\d+(?:\.\d+)?(?:e[+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    datasource: str
    text: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel!r}: {self.text}"


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a row's collapsed panels


def queries() -> list[Query]:
    """Every query of every panel (and of the dashboards' template variables)."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in _panels(board["panels"]):
            for target in panel.get("targets", []):
                uid = (target.get("datasource") or panel["datasource"])["uid"]
                found.append(Query(path.name, panel["title"], uid, target.get("expr") or target.get("rawSql", "")))
        for variable in board.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                found.append(Query(path.name, f"${variable['name']}", variable["datasource"]["uid"],
                                   variable["query"]))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers left once strings, label matchers, ranges,
    grouping clauses and numbers are removed, that are neither a function call nor a keyword."""
    text = _STRINGS.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSETS.sub(" ", text)
    text = _NUMBERS.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def exported_names(exposition: str) -> set[str]:
    """Every series name a /metrics page can produce: its samples, and each family its # TYPE lines declare
    (a labelled family with no child yet has no sample), with a histogram's _bucket/_sum/_count."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind in ("histogram", "summary"):
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def runnable_sql(text: str, start: datetime, end: datetime, tenants: list[str]) -> str:
    """Grafana's SQL as PostgreSQL receives it: $__timeFilter(col) → col BETWEEN the range, $__timeFrom() and
    $__timeTo() → its ends, $tenant (a multi-value variable) → the quoted ids."""
    lo, hi = f"'{start.isoformat()}'", f"'{end.isoformat()}'"
    text = re.sub(r"\$__timeFilter\(([^)]+)\)", lambda m: f"{m.group(1)} BETWEEN {lo} AND {hi}", text)
    text = text.replace("$__timeFrom()", lo).replace("$__timeTo()", hi)
    quoted = ", ".join("'" + t.replace("'", "''") + "'" for t in tenants)
    text = re.sub(r"\$\{?tenant(?::\w+)?\}?", quoted, text)
    if "$" in text:
        raise ValueError(f"a Grafana macro or variable the test does not know is left in: {text}")
    return text
