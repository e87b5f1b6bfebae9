-- The hours the rollups owe the homes' raw data, per home oldest first, at most %(limit)s of them a home:
--   late      rolled up, then more points were written: ingest version newer than the rollup's watermark;
--   unrolled  raw points and no rollup at all (never rolled, or its rollup failed and forgot the watermark),
--             the hour ended by %(ended_by)s (the :05 schedule's grace), within the hourly partitions and the
--             home's raw retention (core.tenants.raw_days).
-- Then per home one summary row per reason for the never-rolled hours left out (first and last hour, hours,
-- points): before_partitions  before %(partitions_start)s;   past_retention  older than the home's raw days.
-- Columns: tenant_id, kind, hour, last_hour, version, points, rolled_at, hours.
WITH owed AS (
    SELECT i.tenant_id, i.hour, i.version, i.points - coalesce(w.points, 0) AS points, w.rolled_at,
           CASE WHEN w.hour IS NOT NULL THEN 'late'
                WHEN i.hour < %(partitions_start)s THEN 'before_partitions'
                WHEN i.hour < %(now)s::timestamptz - make_interval(days => t.raw_days) THEN 'past_retention'
                ELSE 'unrolled' END AS kind
    FROM ops.ingest_hours i
    JOIN core.tenants t ON t.tenant_id = i.tenant_id
    LEFT JOIN ops.rollup_watermarks w ON w.tenant_id = i.tenant_id AND w.hour = i.hour
    WHERE i.tenant_id = ANY(%(tenants)s)
      AND (i.version > w.version OR (w.hour IS NULL AND i.hour + interval '1 hour' <= %(ended_by)s))
), due AS (
    SELECT tenant_id, kind, hour, hour AS last_hour, version, points, rolled_at, 1::bigint AS hours,
           row_number() OVER (PARTITION BY tenant_id ORDER BY hour) AS place
    FROM owed
    WHERE kind IN ('late', 'unrolled')
)
SELECT tenant_id, kind, hour, last_hour, version, points, rolled_at, hours FROM due WHERE place <= %(limit)s
UNION ALL
SELECT tenant_id, kind, min(hour), max(hour), max(version), sum(points)::bigint, NULL, count(*)
FROM owed
WHERE kind IN ('before_partitions', 'past_retention')
GROUP BY tenant_id, kind
ORDER BY tenant_id, hour
