INSERT INTO ops.dq_results (run_id, tenant_id, asset, check_name, window_start, window_end, passed, severity,
                            failing, checked, details)
VALUES (%(run_id)s, %(tenant)s, %(asset)s, %(check)s, %(start)s, %(end)s, %(passed)s, %(severity)s, %(failing)s,
        %(checked)s, %(details)s::jsonb)
