"""Which backups retention keeps, when the daily backup runs, and the WAL names a manifest records:
pure functions, no stack."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backups import wal
from backups.catalogue import Backup, new_id
from backups.retention import kept
from backups.scheduler import next_run
from backups.settings import BackupSettings, BackupSettingsError, load_settings

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _backup(age: timedelta) -> Backup:
    backup_id = new_id(NOW - age)
    return Backup(backup_id, Path("/nowhere") / backup_id, {"format": 1})


def _settings(**values: object) -> BackupSettings:
    return BackupSettings.model_validate({"backup_dir": "/b", "backup_dsn": "postgresql://hats_backup:x@h:1/hats",
                                          "influx_rpc_addr": "127.0.0.1:8088", **values})


def test_the_newest_n_and_the_young_ones_are_kept() -> None:
    backups = [_backup(timedelta(days=days)) for days in (30, 20, 10, 3, 2, 1)]
    by_count = kept(backups, keep=2, keep_days=0, now=NOW)
    assert [b.id for b in by_count] == [b.id for b in backups[-2:]]
    by_age = kept(backups, keep=1, keep_days=5, now=NOW)
    assert [b.id for b in by_age] == [b.id for b in backups[-3:]]


def test_the_only_complete_backup_is_never_removed() -> None:
    old = _backup(timedelta(days=400))
    assert kept([old], keep=1, keep_days=1, now=NOW) == [old]
    assert kept([], keep=1, keep_days=1, now=NOW) == []


def test_the_daily_run_is_the_next_time_of_day_in_utc() -> None:
    settings = _settings(backup_daily_at="02:30")
    assert next_run(NOW, settings) == datetime(2026, 12, 2, 2, 30, tzinfo=UTC)
    assert next_run(NOW.replace(hour=1), settings) == datetime(2026, 12, 1, 2, 30, tzinfo=UTC)


def test_a_bad_time_of_day_names_the_setting() -> None:
    with pytest.raises(BackupSettingsError, match="HATS_BACKUP_DAILY_AT is invalid") as refused:
        load_settings({"HATS_BACKUP_DIR": "/b", "HATS_BACKUP_DSN": "postgresql://hats_backup:x@h:1/hats",
                       "HATS_INFLUX_RPC_ADDR": "127.0.0.1:8088", "HATS_BACKUP_DAILY_AT": "25:00"})
    assert "x@h" not in str(refused.value)


def test_wal_names_follow_the_lsn() -> None:
    assert wal.segment_name(1, wal.parse_lsn("0/2000028")) == "000000010000000000000002"
    assert wal.segment_name(2, wal.parse_lsn("1/FF000000")) == "0000000200000001000000FF"
