-- The homes reported: every active one, so a home with nothing yet reports 0 instead of no series.
SELECT tenant_id::text FROM core.tenants WHERE status = 'active' ORDER BY tenant_id
