-- Dagster's run storage (database dagster, table runs): failed runs by job, as a counter (runs are kept).
SELECT pipeline_name, count(*) FROM runs WHERE status = 'FAILURE' GROUP BY pipeline_name ORDER BY pipeline_name
