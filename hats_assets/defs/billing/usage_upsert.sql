-- A re-run of the day replaces its row (idempotent), measured again.
INSERT INTO billing.usage_daily (tenant_id, day, points_ingested, series, dead_letters, raw_bytes, rollup_bytes)
VALUES (%(tenant)s, %(day)s, %(points_ingested)s, %(series)s, %(dead_letters)s, %(raw_bytes)s, %(rollup_bytes)s)
ON CONFLICT (tenant_id, day) DO UPDATE
SET points_ingested = EXCLUDED.points_ingested, series = EXCLUDED.series, dead_letters = EXCLUDED.dead_letters,
    raw_bytes = EXCLUDED.raw_bytes, rollup_bytes = EXCLUDED.rollup_bytes, measured_at = now()
