-- Per home, over the hours of the lookback: the (check, hour) pairs whose latest result covering the hour
-- failed (a passing re-run clears them, as hats_assets/defs/quality/failed_hours.sql reads them), blocking
-- (severity ERROR) and not; and the UTC days the warehouse refuses: days with an hour failing a blocking
-- check of the warehouse's gate (hats_assets/defs/warehouse/tables.py DAILY_GATE).
WITH candidates AS (
    SELECT DISTINCT tenant_id, asset, check_name, severity,
           generate_series(window_start, window_end - interval '1 hour', interval '1 hour') AS hour
    FROM ops.dq_results
    WHERE NOT passed AND window_end > %(since)s
), failing AS (
    SELECT c.* FROM candidates c
    WHERE c.hour >= %(since)s AND NOT (
        SELECT r.passed FROM ops.dq_results r
        WHERE r.tenant_id = c.tenant_id AND r.asset = c.asset AND r.check_name = c.check_name
          AND r.window_start <= c.hour AND r.window_end > c.hour
        ORDER BY r.checked_at DESC, r.id DESC
        LIMIT 1)
)
SELECT tenant_id,
       count(*) FILTER (WHERE severity = 'ERROR'),
       count(*) FILTER (WHERE severity <> 'ERROR'),
       count(DISTINCT date_trunc('day', hour AT TIME ZONE 'UTC')) FILTER (WHERE severity = 'ERROR'
                                                                             AND asset = ANY(%(gate)s))
FROM failing
GROUP BY tenant_id
