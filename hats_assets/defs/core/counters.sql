-- Entities Home Assistant's statistics treat as meters: rolled up as consumption, not as a mean.
SELECT entity_id FROM core.entities WHERE tenant_id = %(tenant)s AND state_class = ANY(%(state_classes)s)
