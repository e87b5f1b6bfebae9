"""Registry mode's pure parts: topic → tenant by prefix, the stable shard, and (c): a discovery config
cannot make the worker read another home's prefix."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import pytest

from ingest_worker.contract import shard_of, share_group_of
from ingest_worker.rejections import Reason, Rejected
from ingest_worker.routing import TenantRouter, within
from ingest_worker.sources.discovery import DiscoverySource

TENANTS = 1_000


def test_route_finds_the_one_prefix_a_topic_starts_with() -> None:
    router = TenantRouter([("hats/a/", "a"), ("hats/ab/", "ab"), ("other/deep/x/", "deep")])
    assert router.route("hats/a/homeassistant/events") == "a"
    assert router.route("hats/ab/homeassistant/events") == "ab"
    assert router.route("hats/abc/homeassistant/events") is None
    assert router.route("other/deep/x/zigbee2mqtt/s") == "deep"
    assert router.route("other/deep/zigbee2mqtt/s") is None
    assert router.route("hats/a") is None  # the prefix itself without its '/' is not a topic under it
    assert router.route("") is None
    router.remove("hats/a/")
    assert router.route("hats/a/homeassistant/events") is None
    with pytest.raises(ValueError, match="topic_prefix"):
        router.add("hats/nos", "x")


def test_route_agrees_with_a_scan_of_every_prefix() -> None:
    """The independent reference: the tenant whose prefix the topic starts with, by scanning them all."""
    prefixes = [(f"hats/h{i:04d}/", f"h{i:04d}") for i in range(TENANTS)] + [("zone/7/home/", "z7")]
    router = TenantRouter(prefixes)
    topics = [f"hats/h{i:04d}/homeassistant/statestream/sensor/t{i}/state" for i in range(0, TENANTS, 7)]
    topics += ["zone/7/home/x", "zone/7/x", "hats/h99999/x", "hats/", "nothing"]
    for topic in topics:
        expected = next((tenant for prefix, tenant in prefixes if topic.startswith(prefix)), None)
        assert router.route(topic) == expected, topic


def test_route_costs_microseconds_at_a_thousand_tenants() -> None:
    """Measured, not assumed: routing 100,000 topics among 1,000 prefixes (printed with -s)."""
    router = TenantRouter((f"hats/h{i:04d}/", f"h{i:04d}") for i in range(TENANTS))
    topics = [f"hats/h{i % TENANTS:04d}/homeassistant/statestream/sensor/e{i % 20}/state" for i in range(100_000)]
    started = time.perf_counter()
    routed = sum(1 for topic in topics if router.route(topic) is not None)
    per_message_us = (time.perf_counter() - started) / len(topics) * 1e6
    print(f"routing: {per_message_us:.2f} µs per message at {TENANTS} tenants")
    assert routed == len(topics)
    assert per_message_us < 20


def test_shard_is_a_stable_hash_of_the_id() -> None:
    ids = [f"home_{i}" for i in range(2_000)]
    expected = {t: int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "big") % 4 for t in ids}
    assert {t: shard_of(t, 4) for t in ids} == expected
    # The same in another process (whose str hash is salted differently).
    code = ("import json,sys; from ingest_worker.contract import shard_of; "
            "print(json.dumps([shard_of(t, 4) for t in json.load(sys.stdin)]))")
    other = subprocess.run([sys.executable, "-c", code], input=json.dumps(ids), capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "12345", "PATH": ""})
    assert json.loads(other.stdout) == [expected[t] for t in ids]
    counts = [sum(1 for t in ids if expected[t] == s) for s in range(4)]
    assert min(counts) > 400  # spread over every shard
    assert all(shard_of(t, 1) == 0 for t in ids)
    with pytest.raises(ValueError, match="shards"):
        shard_of("a", 0)
    assert share_group_of(1, 4) != share_group_of(1, 8)


def test_within_an_empty_prefix_is_everything() -> None:
    assert within("zigbee2mqtt/x", "")
    assert within("hats/a/x", "hats/a/")
    assert not within("hats/b/x", "hats/a/")


def _config(state_topic: str) -> bytes:
    return json.dumps({"state_topic": state_topic, "value_template": "{{ value_json.t }}",
                       "unit_of_measurement": "°C", "device_class": "temperature", "object_id": "probe",
                       "unique_id": "probe-1"}).encode()


def test_a_discovery_config_pointing_into_another_home_is_refused() -> None:
    source = DiscoverySource("hats/a/homeassistant", tenant_prefix="hats/a/")
    topic = "hats/a/homeassistant/sensor/probe/config"
    with pytest.raises(Rejected) as refused:
        source.handle(topic, _config("hats/b/zigbee2mqtt/probe"))
    assert refused.value.reason == Reason.FOREIGN_TOPIC
    assert "hats/b/zigbee2mqtt/probe" in refused.value.detail
    assert "'hats/a/'" in refused.value.detail
    assert source.state_topics() == ()  # nothing to subscribe
    with pytest.raises(Rejected) as outside:
        source.handle(topic, _config("zigbee2mqtt/probe"))  # outside every home's prefix: refused too
    assert outside.value.reason == Reason.FOREIGN_TOPIC
    own = source.handle(topic, _config("hats/a/zigbee2mqtt/probe"))
    assert own.subscribe == ("hats/a/zigbee2mqtt/probe",)
    # Without a prefix (single mode, HATS_TOPIC_PREFIX=''), the whole namespace is the home's.
    assert DiscoverySource("homeassistant").handle("homeassistant/sensor/probe/config",
                                                   _config("zigbee2mqtt/probe")).subscribe == ("zigbee2mqtt/probe",)


def test_a_shard_beyond_the_count_is_refused_naming_both_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from ingest_worker.settings import ConfigError, load_settings

    for name, value in {"HATS_INFLUX_WRITE_URL": "http://127.0.0.1:1", "HATS_INFLUX_USERNAME": "u",
                        "HATS_INFLUX_PASSWORD": "p", "HATS_INGEST_DSN": "postgresql://x", "HATS_MQTT_USERNAME": "u",
                        "HATS_MQTT_PASSWORD": "p", "HATS_TENANT_MODE": "registry", "HATS_SHARD": "4",
                        "HATS_SHARDS": "4"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="HATS_SHARD 4 must be below HATS_SHARDS 4"):
        load_settings()
    monkeypatch.setenv("HATS_SHARD", "3")
    settings = load_settings()
    assert settings.registry_mode
    assert (settings.shard, settings.shards) == (3, 4)
