"""`python -m ingest_worker`: validate settings, then run until SIGTERM."""

from __future__ import annotations

import asyncio
import sys

from ingest_worker import logs
from ingest_worker.app import run
from ingest_worker.settings import ConfigError, load_settings


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    logs.configure(settings.log_format)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
