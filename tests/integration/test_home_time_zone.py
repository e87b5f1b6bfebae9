"""The live WebSocket link stores the home's time zone from a real Home Assistant's get_config, and
leaves a zone an operator set alone (2024.3 and 2025.4)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import psycopg
import pytest

from devstack.profile import Profile
from tests.conftest import Tenant, WorkerProcess, new_tenant, wait_for
from tests.ha_peer import HaPeer

pytestmark = pytest.mark.integration

SUBSCRIBED = "subscribed to Home Assistant"
FILLED = "first connection for this tenant"


def filled(worker: WorkerProcess) -> bool:
    return FILLED in worker.output()


def zone_of(dsn: str, tenant: str) -> tuple[str, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT time_zone, time_zone_source FROM core.tenants WHERE tenant_id = %s",
                           (tenant,)).fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def test_the_link_stores_home_assistants_zone_but_never_over_an_operators(
        tenant: Tenant, home_assistant: HaPeer, start_worker: Callable[..., WorkerProcess],
        profile: Profile, stack_env: dict[str, str], secrets: dict[str, str]) -> None:
    ha_zone = home_assistant.ws_call("get_config")["time_zone"]
    assert ha_zone not in ("UTC", "Asia/Tokyo")  # else this test could not tell the zones apart
    operated = new_tenant(profile, stack_env, secrets)
    dsn = stack_env["HATS_PG_DSN"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE core.tenants SET time_zone = 'Asia/Tokyo', time_zone_source = 'operator' "
                     "WHERE tenant_id = %s", (operated.name,))
    assert zone_of(dsn, tenant.name) == ("UTC", "default")
    workers = []
    for each in (tenant, operated):
        env = {**each.env, "HATS_SOURCES": "websocket", "HATS_HA_URL": home_assistant.url,
               "HATS_HA_TOKEN": home_assistant.token, "HATS_HA_RECORDER_COMMIT_S": "0"}
        workers.append(start_worker(env, ready_line=SUBSCRIBED))
    for worker in workers:
        wait_for(functools.partial(filled, worker), "the link's first fill (registries, zone, states)")
    wait_for(lambda: zone_of(dsn, tenant.name) == (ha_zone, "home_assistant"),
             f"core.tenants.time_zone = {ha_zone} from Home Assistant")
    for worker in workers:
        assert worker.stop() == 0
    assert zone_of(dsn, operated.name) == ("Asia/Tokyo", "operator")
