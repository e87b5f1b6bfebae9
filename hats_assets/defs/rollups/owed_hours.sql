-- Hours rolled up before their latest points arrived: ingest version newer than the rollup's watermark.
SELECT i.hour, i.version, i.points - w.points AS late_points, w.rolled_at
FROM ops.ingest_hours i
JOIN ops.rollup_watermarks w ON w.tenant_id = i.tenant_id AND w.hour = i.hour
WHERE i.tenant_id = %(tenant)s AND i.version > w.version
ORDER BY i.hour
LIMIT %(limit)s
