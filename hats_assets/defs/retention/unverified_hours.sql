-- Raw hours the worker wrote whose 1 min rollup is missing or older than their latest points: these
-- hours still need their raw data. The current hour is not rollable yet and is left out.
SELECT i.hour
FROM ops.ingest_hours i
LEFT JOIN ops.rollup_watermarks w ON w.tenant_id = i.tenant_id AND w.hour = i.hour
WHERE i.tenant_id = %(tenant)s AND (w.hour IS NULL OR w.version < i.version) AND i.hour < %(current_hour)s
ORDER BY i.hour
LIMIT %(limit)s
