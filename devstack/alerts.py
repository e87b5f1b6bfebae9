"""Which alerts a Prometheus has firing, and whether its targets are up: the small API the live tests and
`bench/soak.py` read (Prometheus's own /api/v1/alerts and /api/v1/targets, nothing cached)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

TIMEOUT_S = 10.0


class PrometheusError(RuntimeError):
    """Prometheus did not answer, or answered with an error; the message names the URL."""


@dataclass(frozen=True)
class Alert:
    name: str
    state: str  # "pending" (condition true, `for:` not yet over) or "firing"
    labels: dict[str, str]
    annotations: dict[str, str]
    active_at: str


@dataclass(frozen=True)
class Target:
    job: str
    instance: str
    health: str  # "up", "down" or "unknown" (not scraped yet)
    last_error: str
    labels: dict[str, str]


def _get(prometheus_url: str, path: str) -> Any:
    try:
        response = httpx.get(f"{prometheus_url}{path}", timeout=TIMEOUT_S)
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise PrometheusError(f"Prometheus at {prometheus_url} did not answer {path}: {exc}") from exc
    if body.get("status") != "success":
        raise PrometheusError(f"Prometheus at {prometheus_url} answered {path} with {body.get('error')}")
    return body["data"]


def alerts(prometheus_url: str) -> list[Alert]:
    """Every active alert, pending and firing (a resolved alert is no longer listed)."""
    return [Alert(name=a["labels"]["alertname"], state=a["state"], labels=a["labels"],
                  annotations=a.get("annotations", {}), active_at=a.get("activeAt", ""))
            for a in _get(prometheus_url, "/api/v1/alerts")["alerts"]]


def firing(prometheus_url: str, name: str | None = None, **labels: str) -> list[Alert]:
    """The firing alerts, of `name` and with these label values when given."""
    return [a for a in alerts(prometheus_url) if a.state == "firing" and (name is None or a.name == name)
            and all(a.labels.get(key) == value for key, value in labels.items())]


def targets(prometheus_url: str) -> list[Target]:
    """The active scrape targets and their health."""
    return [Target(job=t["labels"].get("job", ""), instance=t["labels"].get("instance", ""), health=t["health"],
                   last_error=t.get("lastError", ""), labels=t["labels"])
            for t in _get(prometheus_url, "/api/v1/targets?state=active")["activeTargets"]]
