"""Parsers for the formats Home Assistant publishes: bytes from a topic in, `EntityState`s out."""
