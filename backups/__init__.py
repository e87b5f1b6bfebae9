"""Backups and restores of the platform's stores: PostgreSQL (base backup + archived WAL, point-in-time
recovery) and InfluxDB (portable backups), as folders `<HATS_BACKUP_DIR>/<UTC timestamp>/` whose manifest
is written last; `hats backup` / `hats restore` (cli.py), the daily run (scheduler.py), retention."""
