-- Time in each state per LOCAL day of the home, summed from state_hourly: an hour counts for the local
-- date of its start (as local_days.sql). Per entity and day the max_states states held longest (ties by
-- name, bytewise like the rollup) are kept; the rest and the hours' own "(other)" rows are one "(other)" row.
WITH up AS (SELECT interval '59 minutes 59.999999 seconds' AS to_hour),
days AS (
    SELECT d::date AS local_day,
           (extract(epoch FROM date_trunc('hour', ((d::date + 1)::timestamp AT TIME ZONE %(zone)s) + up.to_hour)
                               - date_trunc('hour', (d::date::timestamp AT TIME ZONE %(zone)s) + up.to_hour))
            / 3600)::integer AS day_hours
    FROM generate_series(%(first_day)s::date, %(last_day)s::date, interval '1 day') AS d, up
), hours AS (
    SELECT h.*, (h.hour AT TIME ZONE %(zone)s)::date AS local_day
    FROM analytics.state_hourly h
    WHERE h.tenant_id = %(tenant)s AND h.hour >= %(hours_from)s AND h.hour < %(hours_to)s
), loaded AS (
    SELECT entity_id, quantity, local_day, count(DISTINCT hour)::integer AS hours_loaded
    FROM hours GROUP BY entity_id, quantity, local_day
), summed AS (
    SELECT tenant_id, entity_id, quantity, local_day, state, sum(duration_s) AS duration_s, sum(entries) AS entries
    FROM hours GROUP BY tenant_id, entity_id, quantity, local_day, state
), ranked AS (
    SELECT s.*, CASE WHEN s.state = %(other)s THEN NULL ELSE row_number() OVER (
               PARTITION BY s.entity_id, s.quantity, s.local_day
               ORDER BY s.state = %(other)s, s.duration_s DESC, s.state COLLATE "C") END AS place
    FROM summed s
)
INSERT INTO analytics.state_local_daily
    (tenant_id, entity_id, quantity, local_day, state, duration_s, entries, time_zone, day_hours, hours_loaded)
SELECT r.tenant_id, r.entity_id, r.quantity, r.local_day,
       CASE WHEN r.place <= %(max_states)s THEN r.state ELSE %(other)s END, sum(r.duration_s), sum(r.entries),
       %(zone)s, d.day_hours, l.hours_loaded
FROM ranked r
JOIN loaded l USING (entity_id, quantity, local_day)
JOIN days d USING (local_day)
GROUP BY r.tenant_id, r.entity_id, r.quantity, r.local_day,
         CASE WHEN r.place <= %(max_states)s THEN r.state ELSE %(other)s END, d.day_hours, l.hours_loaded
