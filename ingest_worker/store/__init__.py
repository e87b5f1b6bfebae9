"""Where points and rejects land: InfluxDB for points, PostgreSQL ops.dead_letters for rejects."""
