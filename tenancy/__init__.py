"""The operator's tenant administration: a home is a row, and adding one makes everything that serves it.

`registry.TenantRegistry` is the Python API (`hats tenant …` in `cli.py` is a thin shell over it): it
validates a `spec.TenantSpec`, then creates the home's `core.tenants` row, its InfluxDB database, retention
policies and grants (`influx.py`), its broker accounts (`broker.py`), its analyst role (`analyst_roles.py`),
their passwords in the tenant secrets directory (`secrets.py`) and their `iam.accounts` rows (`iam.py`),
all or nothing, and audits every action in `ops.tenant_audit`.
"""
