INSERT INTO ops.retention_audit (run_id, store, action, target, range_start, range_end, affected, dry_run, detail)
VALUES (%(run_id)s, %(store)s, %(action)s, %(target)s, %(range_start)s, %(range_end)s, %(affected)s, %(dry_run)s,
        %(detail)s)
