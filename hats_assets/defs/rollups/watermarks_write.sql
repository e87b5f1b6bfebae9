-- After the rollup is stored: which ingest version of the hour it contains.
INSERT INTO ops.rollup_watermarks (tenant_id, hour, version, points, rolled_at, run_id)
VALUES (%(tenant)s, %(hour)s, %(version)s, %(points)s, now(), %(run_id)s)
ON CONFLICT (tenant_id, hour) DO UPDATE
SET version = EXCLUDED.version, points = EXCLUDED.points, rolled_at = now(), run_id = EXCLUDED.run_id
