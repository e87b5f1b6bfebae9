"""A deterministic (seeded) Home Assistant fleet that publishes real-shaped MQTT messages.

It is the demo's data source and the tests' and benchmarks' load generator: the same seed and start
always produce the same devices, values, timestamps and bytes on the wire. See README.md for the layout;
`simulation.Simulation` generates without a broker, `publish.run` publishes.
"""
