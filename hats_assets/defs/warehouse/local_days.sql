-- Local days re-aggregated exactly from their hours, like daily_from_hourly.sql, with each day's length
-- (UTC hours starting on that local date: 23 or 25 when the clocks change) and the hours loaded.
WITH up AS (SELECT interval '59 minutes 59.999999 seconds' AS to_hour),
days AS (
    SELECT d::date AS local_day,
           (extract(epoch FROM date_trunc('hour', ((d::date + 1)::timestamp AT TIME ZONE %(zone)s) + up.to_hour)
                               - date_trunc('hour', (d::date::timestamp AT TIME ZONE %(zone)s) + up.to_hour))
            / 3600)::integer AS day_hours
    FROM generate_series(%(first_day)s::date, %(last_day)s::date, interval '1 day') AS d, up
), hours AS (
    SELECT h.*, (h.hour AT TIME ZONE %(zone)s)::date AS local_day
    FROM analytics.hourly_rollup h
    WHERE h.tenant_id = %(tenant)s AND h.hour >= %(hours_from)s AND h.hour < %(hours_to)s
)
INSERT INTO analytics.local_daily_rollup
    (tenant_id, entity_id, quantity, kind, local_day, time_zone, day_hours, hours_loaded, imported_hours, mean,
     min, max, count, last, available_s, value_s, consumption, resets, last_seen)
SELECT h.tenant_id, h.entity_id, h.quantity, h.kind, h.local_day, %(zone)s, d.day_hours, count(*),
       count(*) FILTER (WHERE h.origin = 'imported'),
       sum(h.value_s) / nullif(sum(h.available_s), 0), min(h.min), max(h.max), sum(h.count),
       (array_agg(h.last ORDER BY h.hour DESC) FILTER (WHERE h.last IS NOT NULL))[1],
       sum(h.available_s), sum(h.value_s), sum(h.consumption), sum(h.resets), max(h.last_seen)
FROM hours h
JOIN days d ON d.local_day = h.local_day
GROUP BY h.tenant_id, h.entity_id, h.quantity, h.kind, h.local_day, d.day_hours
