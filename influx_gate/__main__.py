"""`python -m influx_gate`: validate the settings, then serve until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import sys

from influx_gate.server import serve
from influx_gate.settings import GateConfigError, load_settings


def main() -> None:
    try:
        settings = load_settings()
    except GateConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
