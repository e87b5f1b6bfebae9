-- The month partitions of the warehouse tables (created by the loader, named <parent>_pYYYY_MM).
SELECT c.relname
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
JOIN pg_namespace n ON n.oid = p.relnamespace
WHERE n.nspname = 'analytics' AND p.relname = ANY(%(parents)s)
