"""`python -m ops_exporter`: serve /metrics until SIGTERM/SIGINT (settings: HATS_EXPORTER_*)."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from prometheus_client import CollectorRegistry, start_http_server
from pydantic import ValidationError

from ops_exporter.collector import OpsCollector
from ops_exporter.settings import ENV_PREFIX, ExporterSettings

log = logging.getLogger("ops_exporter")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = ExporterSettings()
    except ValidationError as exc:
        for error in exc.errors():
            name = ENV_PREFIX + "_".join(str(part) for part in error["loc"]).upper()
            print(f"ops_exporter: {name}: {error['msg']}; set it in the environment", file=sys.stderr)
        return 2
    registry = CollectorRegistry(auto_describe=True)
    registry.register(OpsCollector(settings))
    server, thread = start_http_server(settings.port, settings.host, registry=registry)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("serving /metrics on %s:%d", settings.host, settings.port)
    stop.wait()
    server.shutdown()
    thread.join(timeout=5)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
