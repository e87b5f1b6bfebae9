-- Replace exactly one tenant's hour: a re-run of the partition overwrites it, never duplicates it.
DELETE FROM analytics.entity_hourly
WHERE tenant_id = %(tenant)s AND hour >= %(start)s AND hour < %(end)s
