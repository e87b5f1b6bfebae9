"""`python -m ingest_worker`: validate settings, then run until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import sys

from ingest_worker.app import run
from ingest_worker.settings import ConfigError, load_settings


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
