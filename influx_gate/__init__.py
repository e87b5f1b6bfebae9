"""The InfluxDB write gate: the worker's only way to InfluxDB, and a path on which writing is all it can do.

InfluxDB 1.x lets an account with WRITE on a database also run `DELETE`, `DROP SERIES` and
`DROP RETENTION POLICY` on it, so a leaked worker credential could wipe a home's history. The worker holds
a credential of this gate instead; the gate holds the InfluxDB account with WRITE and forwards only
`POST /write` (to a home's database, policy `raw` or `rollup`) and `/ping`; everything else is refused.
"""
