-- A day is an exact re-aggregation of its hours: means weighted by available time, meters summed.
INSERT INTO analytics.daily_rollup
    (tenant_id, entity_id, quantity, kind, day, mean, min, max, count, last, available_s, value_s,
     consumption, resets, last_seen, imported_hours)
SELECT tenant_id, entity_id, quantity, kind, (hour AT TIME ZONE 'UTC')::date,
       sum(value_s) / nullif(sum(available_s), 0), min(min), max(max), sum(count),
       (array_agg(last ORDER BY hour DESC) FILTER (WHERE last IS NOT NULL))[1],
       sum(available_s), sum(value_s), sum(consumption), sum(resets), max(last_seen),
       count(*) FILTER (WHERE origin = 'imported')
FROM analytics.hourly_rollup
WHERE tenant_id = %(tenant)s AND hour >= %(start)s AND hour < %(end)s
GROUP BY tenant_id, entity_id, quantity, kind, (hour AT TIME ZONE 'UTC')::date
