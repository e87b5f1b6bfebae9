-- Per active home, how far its rollups are behind its raw data, from what the worker and the rollups write:
--   behind_s  while a complete hour with points (ops.ingest_hours, before the current hour) is newer than the
--             newest hour the 1 min rollup read (ops.rollup_watermarks): now − the end of that rolled-up hour
--             (− the start of the first hour with points when none was ever rolled up); else 0, so a quiet
--             home whose every hour is rolled up is not behind;
--   owed      complete hours of the lookback with points never rolled up or written to since (late data).
SELECT t.tenant_id::text,
       CASE WHEN d.newest IS NULL OR d.newest <= coalesce(w.newest, '-infinity'::timestamptz) THEN 0
            ELSE extract(epoch FROM now() - coalesce(w.newest + interval '1 hour', d.oldest)) END::float8,
       coalesce(o.owed, 0)
FROM core.tenants t
LEFT JOIN LATERAL (
    SELECT max(i.hour) AS newest, min(i.hour) AS oldest FROM ops.ingest_hours i
    WHERE i.tenant_id = t.tenant_id::text AND i.hour < date_trunc('hour', now())
) d ON true
LEFT JOIN LATERAL (
    SELECT max(r.hour) AS newest FROM ops.rollup_watermarks r WHERE r.tenant_id = t.tenant_id::text
) w ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS owed FROM ops.ingest_hours i
    LEFT JOIN ops.rollup_watermarks r ON r.tenant_id = i.tenant_id AND r.hour = i.hour
    WHERE i.tenant_id = t.tenant_id::text AND i.hour >= %(since)s AND i.hour < date_trunc('hour', now())
      AND (r.hour IS NULL OR r.version < i.version)
) o ON true
WHERE t.status = 'active'
ORDER BY t.tenant_id
