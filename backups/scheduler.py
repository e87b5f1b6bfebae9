"""The daily backup, from an operator-side process (`python -m backups.scheduler`, started by `hats run`).

Why not a Dagster schedule: a backup needs the REPLICATION role and InfluxDB's backup RPC, and the code
location is being trimmed to the least its assets need; an operator-side process keeps those credentials
out of it. In Kubernetes the chart's CronJob does the same (deploy/hats/templates/backup-cronjob.yaml).

At HATS_BACKUP_DAILY_AT (UTC) it takes a backup and applies retention; a failed backup is logged and tried
again after RETRY_S, never more than once an hour. SIGTERM ends the wait at once.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from types import FrameType

from backups import retention, take
from backups.catalogue import BackupError
from backups.settings import BackupSettings, BackupSettingsError, load_settings

RETRY_S = 3600.0
log = logging.getLogger("hats.backups")


def next_run(now: datetime, settings: BackupSettings) -> datetime:
    """The next HATS_BACKUP_DAILY_AT after `now` (pure: tested without a clock)."""
    today = datetime.combine(now.astimezone(UTC).date(), settings.daily_at, tzinfo=UTC)
    return today if today > now else today + timedelta(days=1)


def run_once(settings: BackupSettings) -> bool:
    try:
        made = take.take(settings, log.info)
        retention.prune(settings, datetime.now(UTC), log.info)
    except (BackupError, OSError) as exc:
        log.error("the daily backup failed: %s", exc)
        return False
    log.info("backup %s complete (%.1f MB)", made.id, made.size / 1e6)
    return True


def serve(settings: BackupSettings, stop: threading.Event) -> None:
    due = next_run(datetime.now(UTC), settings)
    while True:
        log.info("next backup at %s", due.isoformat())
        if stop.wait(max(0.0, (due - datetime.now(UTC)).total_seconds())):
            return
        if run_once(settings):
            due = next_run(datetime.now(UTC), settings)
        else:
            due = datetime.now(UTC) + timedelta(seconds=RETRY_S)


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    try:
        settings = load_settings()
    except BackupSettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serve(settings, stop)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
