"""Imports of Home Assistant's history (recorder database or WebSocket API) into the tenant's stores."""
