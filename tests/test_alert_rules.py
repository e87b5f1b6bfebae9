"""The alert rules hold together: promtool accepts them and their unit tests pass, every metric a rule names
is one the worker or the ops exporter really exports, every rule has a runbook section in the README (and every
runbook section a rule), and the test profile's scaled copy of the rules is still valid."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from devstack import prometheus
from devstack.profile import PROJECT_ROOT
from ingest_worker.metrics import REGISTRY as WORKER_REGISTRY
from ops_exporter.collector import METRICS, Reading, families

RULE_TESTS = PROJECT_ROOT / "tests" / "prometheus" / "alerts_test.yml"
README = (PROJECT_ROOT / "README.md").read_text()
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("_sum", "_count", "")}
# Prometheus's own series about each scrape.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
ANNOTATIONS = {"summary", "description", "runbook"}
RUNBOOK_PARTS = ("**What it means**", "**How to confirm**", "**What to do**")


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(prometheus.RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def sample_names(exposition: bytes) -> set[str]:
    """The series names a /metrics text exposes, from each family's type (labelled families without children yet
    expose their TYPE line only)."""
    names = set()
    for family in text_string_to_metric_families(exposition.decode()):
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names


class _Fixed(Collector):
    def __init__(self, reading: Reading) -> None:
        self._reading = reading

    def collect(self) -> Any:
        return iter(families(self._reading, 0.01))


def exporter_exposition() -> bytes:
    """What the exporter's collector serves for a home with every value set (and a run failure)."""
    registry = CollectorRegistry()
    reading = Reading(tenants=["a"], behind_s={"a": 1.0}, owed_hours={"a": 1}, failing={("a", True): 1},
                      refused_days={"a": 1}, raw_extended={"a": 1}, run_failures={"job": 1})
    registry.register(_Fixed(reading))
    return generate_latest(registry)


def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    check = subprocess.run([prometheus.PROMTOOL, "check", "rules", str(prometheus.RULES)], capture_output=True,
                           text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules())} rules found" in check.stdout
    unit = subprocess.run([prometheus.PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                          check=False)
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_every_rule_has_a_firing_and_a_silent_unit_test() -> None:
    cases: dict[str, list[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(bool(case["exp_alerts"]))
    for rule in rules():
        assert True in cases.get(rule["alert"], []), f"no promtool test sees {rule['alert']} fire"
        assert False in cases.get(rule["alert"], []), f"no promtool test sees {rule['alert']} stay silent"


def test_every_metric_a_rule_names_is_exported() -> None:
    exported = sample_names(generate_latest(WORKER_REGISTRY)) | sample_names(exporter_exposition()) | SCRAPE_SERIES
    assert {name for name, (kind, _) in METRICS.items() if kind == "gauge"} <= exported
    for rule in rules():
        unquoted = re.sub(r'"[^"]*"', '""', rule["expr"])  # label values (job="hats_worker") are not metrics
        named = set(re.findall(r"\b(hats_[a-z0-9_]+|up)\b", unquoted))
        assert named, f"{rule['alert']} names no metric"
        assert named <= exported, f"{rule['alert']} names {sorted(named - exported)}, which nothing exports"


def _runbook_sections() -> dict[str, str]:
    return dict(re.findall(r"^#### Runbook: (\w+)\n(.*?)(?=^#{2,4} )", README, flags=re.MULTILINE | re.DOTALL))


def test_every_rule_has_its_runbook_section_and_annotations() -> None:
    sections = _runbook_sections()
    assert set(sections) == {rule["alert"] for rule in rules()}, "README runbook sections and alert rules differ"
    for rule in rules():
        name = rule["alert"]
        assert set(rule["annotations"]) == ANNOTATIONS, name
        assert rule["annotations"]["runbook"] == f"README.md#runbook-{name.lower()}", name
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        for part in RUNBOOK_PARTS:
            assert part in sections[name], f"README's runbook for {name} has no {part} paragraph"


def test_the_test_profile_runs_the_same_rules_with_shorter_durations(tmp_path: Path) -> None:
    scaled = prometheus.scale_durations(prometheus.RULES.read_text(), 1 / 30)
    assert prometheus.scale_durations("for: 2m\nexpr: delta(x[15m]) > 0 and y[1h]", 1 / 30) == \
        "for: 4s\nexpr: delta(x[30s]) > 0 and y[120s]"
    originals, shortened = rules(), [r for g in yaml.safe_load(scaled)["groups"] for r in g["rules"]]
    assert [r["alert"] for r in shortened] == [r["alert"] for r in originals]
    assert [r["annotations"] for r in shortened] == [r["annotations"] for r in originals]
    path = tmp_path / "alerts.yml"
    path.write_text(scaled)
    check = subprocess.run([prometheus.PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr
