"""The README's settings tables (and the worker's metrics) cannot drift from the code: they are written by
`hats docs` from the settings classes and the metrics module (devstack/readme_tables.py), this fails when the
README holds anything else, and every environment variable the code reads must be in one of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import Field
from pydantic_settings import BaseSettings

from devstack import readme_tables
from devstack.profile import PROJECT_ROOT
from ingest_worker.settings import ENV_PREFIX, WorkerSettings

README = (PROJECT_ROOT / "README.md").read_text()
# A read of a variable: os.environ.get("X"…), os.environ["X"], environ.get(X_ENV) is caught by its constant.
ENV_READ = re.compile(r"""environ(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]+)["']""")
HATS_LITERAL = re.compile(r"""["'](HATS_[A-Z0-9_]+)["']""")


def worker_table() -> str:
    start = README.index("### Ingest worker")
    return README[start:README.index("\n### ", start + 1)]


def documented() -> set[str]:
    """Every variable the generated settings tables name in their first column."""
    text = "\n".join(readme_tables.SECTIONS[name]() for name in readme_tables.SETTINGS_SECTIONS)
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", text, re.MULTILINE))


def test_the_settings_tables_are_what_the_code_writes() -> None:
    stale = readme_tables.stale(README, readme_tables.SETTINGS_SECTIONS)
    assert stale == [], readme_tables.stale_message(stale)


def test_the_worker_metrics_table_is_what_the_code_writes() -> None:
    stale = readme_tables.stale(README, readme_tables.METRICS_SECTIONS)
    assert stale == [], readme_tables.stale_message(stale)
    assert "| `hats_write_seconds` | histogram |" in readme_tables.worker_metrics_table()


def test_every_worker_setting_is_in_the_readme_table() -> None:
    documented = set(re.findall(r"`(HATS_[A-Z0-9_]+)`", worker_table()))
    fields = {ENV_PREFIX + name.upper() for name in WorkerSettings.model_fields}
    assert fields - documented == set()


def test_the_readme_worker_table_names_only_real_settings() -> None:
    rows = re.findall(r"^\| `(HATS_[A-Z0-9_]+)`(?:, `(HATS_[A-Z0-9_]+)`)? \|", worker_table(), re.MULTILINE)
    named = {name for row in rows for name in row if name}
    fields = {ENV_PREFIX + name.upper() for name in WorkerSettings.model_fields}
    assert named - fields == set()


def _python(folder: str) -> list[Path]:
    return sorted((PROJECT_ROOT / folder).rglob("*.py"))


def test_every_variable_the_code_location_reads_is_documented() -> None:
    """A HATS_ name anywhere in hats_assets/ (an EnvVar, a constant, an environ read) or dagster.yaml's `env:`."""
    named = {name for path in _python("hats_assets") for name in HATS_LITERAL.findall(path.read_text())}
    named |= set(re.findall(r"env:\s*([A-Z][A-Z0-9_]+)", (PROJECT_ROOT / "dagster.yaml").read_text()))
    assert {"HATS_DAGSTER_DSN", "HATS_DAGSTER_PG_URL"} <= named  # the scan sees both kinds
    missing = named - documented()
    assert missing == set(), f"{sorted(missing)}: read by the code location, in no README settings table; " \
                             f"add them where the table reads them (hats_assets/environment.py), then run " \
                             f"`{readme_tables.REGENERATE}`"


def test_every_variable_the_stack_reads_is_documented() -> None:
    """devstack/ reads its settings through stack_settings.value (a KeyError for an undocumented one); a direct
    environ read, or bootstrap.sh's ${HATS_…:-default}, must name a documented variable too."""
    named = {name for path in _python("devstack") for name in ENV_READ.findall(path.read_text())
             if name.startswith("HATS_")}
    named |= set(re.findall(r"\$\{(HATS_[A-Z0-9_]+):-", (PROJECT_ROOT / "devstack" / "bootstrap.sh").read_text()))
    assert "HATS_PG_WHEEL_VERSION" in named  # bootstrap's read is seen
    missing = named - documented()
    assert missing == set(), f"{sorted(missing)}: read by devstack/, in no README settings table; add them to " \
                             f"devstack/stack_settings.py, then run `{readme_tables.REGENERATE}`"


def test_a_setting_without_a_description_is_refused_naming_it() -> None:
    class Example(BaseSettings):
        described: int = Field(1, description="what it does")
        bare: int = 2

    with pytest.raises(readme_tables.UndescribedError, match=r"Example\.bare \(HATS_BARE\) has no description"):
        readme_tables.settings_rows(Example, ENV_PREFIX)


def test_a_stale_table_is_named_and_regenerated(tmp_path: Path) -> None:
    """What a helper adding a setting sees: the check names the table and the command, and the command fixes it."""
    row = next(line for line in worker_table().splitlines() if line.startswith("| `HATS_LOG_FORMAT`"))
    readme = tmp_path / "README.md"
    readme.write_text(README.replace(row + "\n", ""))
    assert readme_tables.stale(readme.read_text(), readme_tables.SETTINGS_SECTIONS) == ["worker settings"]
    assert "run `.venv/bin/hats docs`" in readme_tables.stale_message(["worker settings"])
    assert readme_tables.main(check=True, path=readme) == 1
    assert readme_tables.main(check=False, path=readme) == 0
    assert readme.read_text() == README


def test_the_tracing_variables_are_in_both_settings_tables() -> None:
    """The OpenTelemetry variables the worker and the code location read (TraceSettings) are documented in the
    worker's table and in the Dagster table."""
    from ingest_worker.tracing.settings import TraceSettings

    start = README.index("### Dagster code location")
    dagster_table = README[start:README.index("\n### ", start + 1)]
    variables = {name.upper() for name in TraceSettings.model_fields}
    for table in (worker_table(), dagster_table):
        assert variables - set(re.findall(r"`(OTEL_[A-Z0-9_]+)`", table)) == set()
