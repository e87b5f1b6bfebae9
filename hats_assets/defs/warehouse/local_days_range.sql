-- The local days (in %(zone)s) that hold an hour of the UTC window [start, end), and the UTC hours they
-- span. An hour belongs to the local date of its start (as Home Assistant's daily statistics), so a local
-- day is the UTC hours from its midnight, rounded up to the hour, to the next midnight, rounded up.
WITH days AS (
    SELECT (%(start)s::timestamptz AT TIME ZONE %(zone)s)::date AS first_day,
           ((%(end)s::timestamptz - interval '1 hour') AT TIME ZONE %(zone)s)::date AS last_day
), up AS (SELECT interval '59 minutes 59.999999 seconds' AS to_hour)
SELECT first_day, last_day,
       date_trunc('hour', (first_day::timestamp AT TIME ZONE %(zone)s) + up.to_hour) AS hours_from,
       date_trunc('hour', ((last_day + 1)::timestamp AT TIME ZONE %(zone)s) + up.to_hour) AS hours_to
FROM days, up
