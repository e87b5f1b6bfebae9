-- The homes' imports after the sensor's cursor, in order (a running one stops the sensor there).
SELECT import_id, tenant_id, source_kind, source, status, started_at, finished_at, states_read, points_written,
       dead_lettered, statistic_rows, first_at, last_at, hours_from, hours_to, detail
FROM ops.imports
WHERE tenant_id = ANY(%(tenants)s) AND import_id > %(after)s
ORDER BY import_id
LIMIT %(limit)s
