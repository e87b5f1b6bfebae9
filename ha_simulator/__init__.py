"""A deterministic (seeded) Home Assistant fleet that publishes real-shaped MQTT messages.

It is the demo's data source and the tests' and benchmarks' load generator: the same seed always
produces the same devices, values and timestamps.
"""
