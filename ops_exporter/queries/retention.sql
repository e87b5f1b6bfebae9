-- Per raw retention policy, whether the latest change retention made to it (not a dry run) extended it over
-- raw hours still waiting for their rollups (hats_assets/defs/retention/assets.py writes "extended beyond …"
-- in the action's detail); a later change back to the home's tier ends it. A policy never changed: no row.
SELECT DISTINCT ON (target) target, detail LIKE %(extended)s
FROM ops.retention_audit
WHERE store = 'influxdb' AND action = 'set_retention_policy' AND NOT dry_run AND target LIKE %(raw_target)s
ORDER BY target, executed_at DESC, id DESC
