"""Dagster's run storage, readable by the ops exporter: the grant Alembic cannot make (database `dagster` is
Dagster's, its tables made by Dagster the first time an instance opens it).

`hats up` opens the instance once when the tables are missing (so they exist before any run), then grants
hats_exporter CONNECT on the database and SELECT on the two columns of `runs` it counts, nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys

from devstack import postgres
from devstack.procs import StackError
from devstack.profile import PROJECT_ROOT, Profile

EXPORTER_ROLE = "hats_exporter"
RUN_COLUMNS = ("pipeline_name", "status")
CREATE_TABLES = "from dagster import DagsterInstance; DagsterInstance.get().dispose()"


def grant_exporter(profile: Profile, secrets: dict[str, str], values: dict[str, str]) -> None:
    with postgres.connect(postgres.superuser_dsn(profile, secrets, postgres.DAGSTER_DB)) as conn:
        if conn.execute("SELECT to_regclass('public.runs')").fetchone() == (None,):
            result = subprocess.run([sys.executable, "-c", CREATE_TABLES], env={**os.environ, **values},
                                    cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise StackError(f"Dagster could not create its run storage in database {postgres.DAGSTER_DB}:\n"
                                 f"{result.stderr[-2000:]}")
        conn.execute(f"GRANT CONNECT ON DATABASE {postgres.DAGSTER_DB} TO {EXPORTER_ROLE}")
        conn.execute(f"GRANT SELECT ({', '.join(RUN_COLUMNS)}) ON public.runs TO {EXPORTER_ROLE}")
