"""Fixtures only integration tests use: the real Home Assistant peer (tests/ha_peer.py)."""

from tests.ha_peer import ha_tenant, home_assistant

__all__ = ["ha_tenant", "home_assistant"]
