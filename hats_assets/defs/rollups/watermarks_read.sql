-- The raw hours' ingest versions BEFORE their points are read: anything written later is late data.
SELECT hour, version, points FROM ops.ingest_hours
WHERE tenant_id = %(tenant)s AND hour >= %(start)s AND hour < %(end)s
