-- Replace exactly one tenant's period: a re-run of the partition overwrites it, never duplicates it.
DELETE FROM analytics.{table} WHERE tenant_id = %(tenant)s AND {period} >= %(start)s AND {period} < %(end)s
