-- Per measurement and state class: how many entities, devices and unit conversions the worker has recorded.
SELECT measurement, coalesce(state_class, '') AS state_class, count(*) AS entities,
       count(DISTINCT device_id) AS devices, count(conversion) AS converted,
       string_agg(DISTINCT unit_canonical, ', ') AS units
FROM core.entities
WHERE tenant_id = %(tenant)s
GROUP BY 1, 2
ORDER BY 1, 2
