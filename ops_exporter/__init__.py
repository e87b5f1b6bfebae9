"""The Dagster side's state as Prometheus metrics: Dagster has no endpoint of its own, so this small server reads
what the assets write (ops.*) and Dagster's run storage, read-only, per home, at every scrape."""
