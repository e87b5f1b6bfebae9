-- Raw hours that still need their raw data: the worker wrote points the 1 min rollup has not read
-- (missing or older watermark), or the latest blocking data-quality result covering the hour failed (a
-- re-run will read the raw data again). The current hour is left out.
WITH candidates AS (
    SELECT hour FROM ops.ingest_hours WHERE tenant_id = %(tenant)s
    UNION
    SELECT generate_series(window_start, window_end - interval '1 hour', interval '1 hour')
    FROM ops.dq_results
    WHERE tenant_id = %(tenant)s AND severity = 'ERROR' AND asset IN ('rollup_1m', 'rollup_1h') AND NOT passed
)
SELECT c.hour
FROM candidates c
LEFT JOIN ops.ingest_hours i ON i.tenant_id = %(tenant)s AND i.hour = c.hour
LEFT JOIN ops.rollup_watermarks w ON w.tenant_id = %(tenant)s AND w.hour = c.hour
WHERE c.hour < %(current_hour)s AND (
    (i.hour IS NOT NULL AND (w.hour IS NULL OR w.version < i.version)) OR EXISTS (
        SELECT 1 FROM (
            SELECT DISTINCT ON (check_name) passed
            FROM ops.dq_results r
            WHERE r.tenant_id = %(tenant)s AND r.severity = 'ERROR' AND r.asset IN ('rollup_1m', 'rollup_1h')
              AND r.window_start <= c.hour AND r.window_end > c.hour
            ORDER BY check_name, checked_at DESC, id DESC
        ) latest WHERE NOT latest.passed))
ORDER BY c.hour
LIMIT %(limit)s
