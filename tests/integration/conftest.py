"""Fixtures only integration tests use: the real Home Assistant peer (tests/ha_peer.py) and two homes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.profile import Profile
from tests.conftest import Tenant, new_tenant, remove_tenant
from tests.ha_peer import ha_tenant, home_assistant

__all__ = ["ha_tenant", "home_assistant", "two_homes"]


@pytest.fixture
def two_homes(tenant: Tenant, profile: Profile, stack_env: dict[str, str],
              secrets: dict[str, str]) -> Iterator[tuple[Tenant, Tenant]]:
    """The test's home and a second one, removed after the test (through the registry, as any home)."""
    other = new_tenant(profile, stack_env, secrets)
    yield tenant, other
    remove_tenant(other.name)
