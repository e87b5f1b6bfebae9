-- The hours the rollups owe the tenant's raw data, oldest first, at most %(limit)s of them:
--   late      rolled up, then more points were written: ingest version newer than the rollup's watermark;
--   unrolled  raw points and no rollup at all, the hour ended by %(ended_by)s (the :05 schedule's grace),
--             within the hourly partitions and raw retention.
-- Then one summary row per reason for the never-rolled hours left out (first and last hour, hours, points):
--   before_partitions  before %(partitions_start)s;   past_retention  before %(retention_start)s.
-- Columns: kind, hour, last_hour, version, points, rolled_at, hours.
WITH owed AS (
    SELECT i.hour, i.version, i.points - coalesce(w.points, 0) AS points, w.rolled_at,
           CASE WHEN w.hour IS NOT NULL THEN 'late'
                WHEN i.hour < %(partitions_start)s THEN 'before_partitions'
                WHEN i.hour < %(retention_start)s THEN 'past_retention'
                ELSE 'unrolled' END AS kind
    FROM ops.ingest_hours i
    LEFT JOIN ops.rollup_watermarks w ON w.tenant_id = i.tenant_id AND w.hour = i.hour
    WHERE i.tenant_id = %(tenant)s
      AND (i.version > w.version OR (w.hour IS NULL AND i.hour + interval '1 hour' <= %(ended_by)s))
), due AS (
    SELECT kind, hour, hour AS last_hour, version, points, rolled_at, 1::bigint AS hours
    FROM owed
    WHERE kind IN ('late', 'unrolled')
    ORDER BY hour
    LIMIT %(limit)s
)
SELECT kind, hour, last_hour, version, points, rolled_at, hours FROM due
UNION ALL
SELECT kind, min(hour), max(hour), max(version), sum(points)::bigint, NULL, count(*)
FROM owed
WHERE kind IN ('before_partitions', 'past_retention')
GROUP BY kind
ORDER BY hour
