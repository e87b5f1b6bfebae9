"""The README's settings table cannot drift from the worker's settings: every field is documented by its
variable, and every HATS_ variable the README's worker table names is a real field."""

from __future__ import annotations

import re

from devstack.profile import PROJECT_ROOT
from ingest_worker.settings import ENV_PREFIX, WorkerSettings

README = (PROJECT_ROOT / "README.md").read_text()


def worker_table() -> str:
    start = README.index("### Ingest worker")
    return README[start:README.index("\n### ", start + 1)]


def test_every_worker_setting_is_in_the_readme_table() -> None:
    documented = set(re.findall(r"`(HATS_[A-Z0-9_]+)`", worker_table()))
    fields = {ENV_PREFIX + name.upper() for name in WorkerSettings.model_fields}
    assert fields - documented == set()


def test_the_readme_worker_table_names_only_real_settings() -> None:
    rows = re.findall(r"^\| `(HATS_[A-Z0-9_]+)`(?:, `(HATS_[A-Z0-9_]+)`)? \|", worker_table(), re.MULTILINE)
    named = {name for row in rows for name in row if name}
    fields = {ENV_PREFIX + name.upper() for name in WorkerSettings.model_fields}
    assert named - fields == set()
