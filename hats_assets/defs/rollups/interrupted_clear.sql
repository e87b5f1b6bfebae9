-- Once a home's window is stored: its "interrupted" marks inside the window have done their work (a
-- completed rollup supersedes them), so the log holds what one uninterrupted run leaves.
DELETE FROM ops.dq_results
WHERE tenant_id = %(tenant)s AND asset = 'rollup_1m' AND check_name = %(check)s AND NOT passed
  AND window_start >= %(start)s AND window_end <= %(end)s
  AND details @> jsonb_build_array(jsonb_build_object('error', %(error)s::text))
