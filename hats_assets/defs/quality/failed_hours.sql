-- Per check and hour, the latest result; the hours where one of them failed (a re-run that passes clears it).
SELECT window_start, check_name, failing
FROM (
    SELECT DISTINCT ON (check_name, window_start) window_start, check_name, passed, failing
    FROM ops.dq_results
    WHERE tenant_id = %(tenant)s AND window_start >= %(start)s AND window_start < %(end)s AND severity = 'ERROR'
      AND asset IN ('rollup_1m', 'rollup_1h')  -- the hourly partitions' checks; feed checks are not per hour
    ORDER BY check_name, window_start, checked_at DESC, id DESC
) latest
WHERE NOT passed
ORDER BY window_start, check_name
