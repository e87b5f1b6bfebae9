-- Raw hours that still need their raw data: the worker wrote points the 1 min rollup has not read
-- (missing or older watermark), or the latest result of a blocking data-quality check on the hour
-- failed (it will be fixed by a re-run, which reads the raw data again). The current hour is left out.
SELECT hour FROM (
    SELECT i.hour
    FROM ops.ingest_hours i
    LEFT JOIN ops.rollup_watermarks w ON w.tenant_id = i.tenant_id AND w.hour = i.hour
    WHERE i.tenant_id = %(tenant)s AND (w.hour IS NULL OR w.version < i.version)
    UNION
    SELECT window_start
    FROM (
        SELECT DISTINCT ON (check_name, window_start) window_start, passed
        FROM ops.dq_results
        WHERE tenant_id = %(tenant)s AND severity = 'ERROR' AND asset IN ('rollup_1m', 'rollup_1h')
        ORDER BY check_name, window_start, checked_at DESC, id DESC
    ) latest
    WHERE NOT passed
) unverified
WHERE hour < %(current_hour)s
ORDER BY hour
LIMIT %(limit)s
