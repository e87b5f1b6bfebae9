"""The Dagster code location of hats: rollups, the PostgreSQL warehouse, checks and retention.

Folders follow the data: `defs/raw` (what the worker landed) → `defs/warehouse` (PostgreSQL
analytics); `definitions.py` only assembles them.
"""
