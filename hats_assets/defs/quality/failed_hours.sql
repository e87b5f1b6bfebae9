-- Per hour of [start, end) and blocking check, the latest ERROR result covering that hour (one hour's
-- run, or a backfill range's single result); the hours where it failed. A passing re-run clears them.
SELECT h.hour, latest.check_name, latest.failing
FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 hour', interval '1 hour') AS h(hour)
CROSS JOIN LATERAL (
    SELECT DISTINCT ON (check_name) check_name, passed, failing
    FROM ops.dq_results
    WHERE tenant_id = %(tenant)s AND severity = 'ERROR' AND asset = ANY(%(assets)s)
      AND window_start <= h.hour AND window_end > h.hour
    ORDER BY check_name, checked_at DESC, id DESC
) latest
WHERE NOT latest.passed
ORDER BY h.hour, latest.check_name
