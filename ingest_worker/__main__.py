"""`python -m ingest_worker`: validate settings, then run until SIGTERM."""

from __future__ import annotations

import asyncio
import sys

import psycopg

from ingest_worker import logs
from ingest_worker.app import run
from ingest_worker.ha_link import HomeAssistantAuthError
from ingest_worker.settings import ConfigError, load_settings


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    logs.configure(settings.log_format)
    try:
        asyncio.run(run(settings))
    except psycopg.OperationalError as exc:
        # Only reachable at start-up: later, PostgreSQL outages are retried while acknowledgements wait.
        print(f"ingest_worker: PostgreSQL is unreachable at start-up ({str(exc).strip()[:300]}); check "
              "HATS_INGEST_DSN and that the database is up (`make status`), then start again", file=sys.stderr)
        sys.exit(1)
    except HomeAssistantAuthError as exc:
        print(f"ingest_worker: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
