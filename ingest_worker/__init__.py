"""The always-on MQTT ingest worker: Home Assistant states in, InfluxDB points or dead letters out.

It stays light (no Dagster, pandas or great-expectations) because it runs continuously next to the
broker; `hats_assets` imports its data contract (`ingest_worker.contract`), never the reverse.
"""
