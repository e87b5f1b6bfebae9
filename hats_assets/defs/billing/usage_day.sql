-- One home's usage of one UTC day from PostgreSQL: points InfluxDB accepted (the worker's per-hour
-- counts, ops.ingest_hours) and the payloads it dead-lettered (ops.dead_letters, by receipt time).
SELECT (SELECT coalesce(sum(points), 0) FROM ops.ingest_hours
        WHERE tenant_id = %(tenant)s AND hour >= %(start)s AND hour < %(end)s) AS points_ingested,
       (SELECT count(*) FROM ops.dead_letters
        WHERE tenant_id = %(tenant)s AND received_at >= %(start)s AND received_at < %(end)s) AS dead_letters
