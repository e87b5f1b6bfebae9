"""The Dagster code location of hats: rollups, the PostgreSQL warehouse, checks and retention.

Folders follow the data: `defs/raw` and `defs/core` (what the worker landed) → `defs/rollups` (1 min,
5 min, 1 h in InfluxDB) → `defs/warehouse` (PostgreSQL analytics) → `defs/retention` (what expires);
`definitions.py` only assembles them.
"""
