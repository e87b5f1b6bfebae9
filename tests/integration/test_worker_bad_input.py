"""A corpus of bad input, interleaved with good messages, published to a real worker process: each bad
message becomes exactly one dead letter (its exact topic and payload bytes, the expected reason code),
every good message around it is written, and the worker neither crashes nor stalls.

The corpus is one table (`CORPUS`) so that its kinds can be read and counted; `@PREFIX@` in a payload
stands for the tenant's topic prefix (discovery configs name their state topics in full).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from devstack import mosquitto
from ha_simulator.publish import Publisher
from ingest_worker.rejections import Reason
from tests.conftest import Tenant, WorkerProcess, wait_for
from tests.integration.test_worker_durability import Start, points, publisher
from tests.integration.test_worker_formats import (
    DISCOVERY,
    EVENTS,
    STATESTREAM,
    STATUS,
    entity_points,
    healthy,
    ns,
    pg_rows,
    sample,
    select,
    state_changed,
    topic,
)
from tests.mqtt import session

pytestmark = pytest.mark.integration

AT = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=250_000)
AT_ISO = AT.isoformat()
PREFIX = b"@PREFIX@"
# The corpus worker's limit: the broker refuses packets over its own 256 KiB (default HATS_MAX_PAYLOAD_BYTES)
# before the worker could see them, so only a lower limit can be exceeded.
MAX_PAYLOAD_BYTES = 64 * 1024
BROKER_MAX_PACKET_BYTES = mosquitto.MESSAGE_SIZE_LIMIT
# A topic the worker's persistent session is subscribed to but no source owns: what a session keeps after
# a source's topic was reconfigured (e.g. HATS_EVENTSTREAM_TOPIC), the one way such a topic reaches it.
LEGACY = "homeassistant/legacy_events"
METER = "zigbee2mqtt/corpus_meter"  # a discovered device: temperature and pressure from one JSON
TEMPLATED = "zigbee2mqtt/corpus_templated"  # a discovered entity whose value_template is unsupported
SS = f"{STATESTREAM}/sensor/corpus_ss"
SETTLE_S = 15.0  # a kind is judged stalled when its good neighbours have not landed by then
POLL_S = 0.1
# Deeper than Python's recursion limit (1000), yet under statestream's 4 KiB attribute bound.
DEEP = 1_500


@dataclass(frozen=True)
class Bad:
    kind: str
    topic: str  # under the tenant's prefix
    payload: bytes
    reason: Reason
    detail: str = ""  # text the dead letter's detail must contain

    def payload_for(self, tenant: Tenant) -> bytes:
        return self.payload.replace(PREFIX, tenant.env["HATS_TOPIC_PREFIX"].encode())


def event(new_state: object, **event_data: object) -> bytes:
    """A state_changed event around an arbitrary (possibly malformed) new_state."""
    return json.dumps({"event_type": "state_changed", "event_data": {**event_data, "new_state": new_state}}).encode()


def reading(entity_id: str, state: str, last_updated: str | None = AT_ISO, **attributes: object) -> bytes:
    new_state: dict[str, object] = {"entity_id": entity_id, "state": state, "attributes": attributes}
    if last_updated is not None:
        new_state["last_updated"] = last_updated
    return event(new_state, entity_id=entity_id)


def config(object_id: str, state_topic: str, template: str, **extra: object) -> bytes:
    return json.dumps({"state_topic": "@PREFIX@" + state_topic, "value_template": template,
                       "object_id": object_id, "unique_id": f"{object_id}_uid", **extra}).encode()


def forecast(hours: int) -> bytes:
    """A weather entity with a long hourly forecast attribute: a valid event, only too large."""
    entries = [{"datetime": (AT + timedelta(hours=h)).isoformat(), "condition": "partlycloudy",
                "temperature": 12.5, "precipitation_probability": 10} for h in range(hours)]
    return reading("weather.home", "partlycloudy", forecast=entries)


CORPUS: list[Bad] = [
    # -- eventstream: not JSON, or not the shape of an event
    Bad("json_truncated", EVENTS, b'{"event_type": "state_changed", "event_data": {broken', Reason.INVALID_JSON),
    Bad("empty_payload", EVENTS, b"", Reason.INVALID_JSON),
    Bad("not_utf8", EVENTS, b'{"event_type": "state_changed", "event_data": {"entity_id": "sensor.\xff"}}',
        Reason.NOT_UTF8),
    Bad("json_array", EVENTS, b'["state_changed", {"entity_id": "sensor.x"}]', Reason.SCHEMA),
    Bad("json_null", EVENTS, b"null", Reason.SCHEMA),
    Bad("event_type_missing", EVENTS, b'{"event_data": {"entity_id": "sensor.x"}}', Reason.SCHEMA),
    Bad("event_type_number", EVENTS, b'{"event_type": 42, "event_data": {}}', Reason.SCHEMA),
    Bad("event_data_missing", EVENTS, b'{"event_type": "state_changed"}', Reason.SCHEMA),
    Bad("event_data_list", EVENTS, b'{"event_type": "state_changed", "event_data": ["sensor.x"]}', Reason.SCHEMA),
    Bad("new_state_string", EVENTS, event("21.5", entity_id="sensor.corpus_a"), Reason.SCHEMA),
    Bad("state_number", EVENTS, event({"entity_id": "sensor.corpus_a", "state": 21.5}), Reason.SCHEMA),
    Bad("state_null", EVENTS, event({"entity_id": "sensor.corpus_a", "state": None}), Reason.SCHEMA),
    Bad("entity_id_missing", EVENTS, event({"state": "21.5", "attributes": {}}), Reason.SCHEMA),
    Bad("attributes_list", EVENTS, event({"entity_id": "sensor.corpus_a", "state": "21.5",
                                          "attributes": ["unit_of_measurement", "°C"]}), Reason.SCHEMA),
    Bad("payload_over_max_payload_bytes", EVENTS, forecast(1_500), Reason.PAYLOAD_TOO_LARGE,
        f"over {MAX_PAYLOAD_BYTES}"),
    # -- values that are no finite number
    Bad("state_nan", EVENTS, reading("sensor.corpus_nan", "nan"), Reason.NON_FINITE),
    Bad("state_inf", EVENTS, reading("sensor.corpus_inf", "inf"), Reason.NON_FINITE),
    Bad("state_minus_inf", EVENTS, reading("sensor.corpus_minus_inf", "-inf"), Reason.NON_FINITE),
    Bad("state_overflows_float", EVENTS, reading("sensor.corpus_overflow", "1e999"), Reason.NON_FINITE),
    Bad("state_overflows_on_kw_to_w", EVENTS, reading("sensor.corpus_kw", "1e306", unit_of_measurement="kW"),
        Reason.NON_FINITE),
    # -- entity ids that are not domain.object_id of [a-z0-9_]
    Bad("entity_id_newline", EVENTS, reading("sensor.porch\ntemp", "21.5"), Reason.BAD_ENTITY_ID),
    Bad("entity_id_comma", EVENTS, reading("sensor.porch,temp", "21.5"), Reason.BAD_ENTITY_ID),
    Bad("entity_id_quote", EVENTS, reading('sensor.porch"temp', "21.5"), Reason.BAD_ENTITY_ID),
    Bad("entity_id_space", EVENTS, reading("sensor.porch temp", "21.5"), Reason.BAD_ENTITY_ID),
    Bad("entity_id_uppercase", EVENTS, reading("sensor.Porch", "21.5"), Reason.BAD_ENTITY_ID),
    Bad("entity_id_without_domain", EVENTS, reading("porch", "21.5"), Reason.BAD_ENTITY_ID),
    Bad("entity_id_non_ascii", EVENTS, reading("sensor.température", "21.5"), Reason.BAD_ENTITY_ID),
    # -- timestamps
    Bad("timestamp_without_offset", EVENTS, reading("sensor.corpus_ts", "1.5", "2026-01-01T10:00:00"),
        Reason.BAD_TIMESTAMP),
    Bad("timestamp_garbage", EVENTS, reading("sensor.corpus_ts", "2.5", "yesterday at noon"), Reason.BAD_TIMESTAMP),
    Bad("timestamp_month_13", EVENTS, reading("sensor.corpus_ts", "3.5", "2026-13-01T00:00:00+00:00"),
        Reason.BAD_TIMESTAMP),
    Bad("timestamp_number", EVENTS, event({"entity_id": "sensor.corpus_ts", "state": "4.5",
                                           "last_updated": 1_764_151_200}), Reason.BAD_TIMESTAMP),
    # Past 2262-04-11: beyond InfluxDB's int64 nanoseconds, so no line can carry it.
    Bad("timestamp_after_2262", EVENTS, reading("sensor.corpus_ts", "5.5", "2300-01-01T00:00:00+00:00"),
        Reason.BAD_TIMESTAMP),
    # Valid, but older than the raw retention policy (30 days): InfluxDB refuses it and says why.
    Bad("older_than_raw_retention", EVENTS,
        reading("sensor.corpus_old", "6.5", (AT - timedelta(days=60)).isoformat(), unit_of_measurement="W"),
        Reason.INFLUX_REJECTED, "beyond retention policy"),
    # -- text that cannot be written
    Bad("state_longer_than_255", EVENTS, reading("sensor.corpus_text", "x" * 300), Reason.SCHEMA),
    Bad("state_newline", EVENTS, reading("sensor.corpus_text", "line one\nline two"), Reason.UNWRITABLE),
    # -- a device_class becomes the measurement name: an identifier like Home Assistant's own, or nothing
    Bad("device_class_newline", EVENTS, reading("sensor.corpus_dc_nl", "7.5", device_class="temperature\nx"),
        Reason.BAD_DEVICE_CLASS),
    # A backslash made core.entities and InfluxDB disagree on the measurement's name.
    Bad("device_class_trailing_backslash", EVENTS,
        reading("sensor.corpus_dc_bs", "8.5", device_class="temperature\\"), Reason.BAD_DEVICE_CLASS),
    Bad("device_class_5000_chars", EVENTS, reading("sensor.corpus_dc_long", "8.5", device_class="t" * 5000),
        Reason.BAD_DEVICE_CLASS, "is not"),
    Bad("device_class_uppercase_space", EVENTS, reading("sensor.corpus_dc_case", "8.5", device_class="Temp C"),
        Reason.BAD_DEVICE_CLASS),
    # -- mqtt_statestream
    Bad("statestream_state_not_utf8", f"{SS}/state", b"21.5\xb0", Reason.NOT_UTF8),
    Bad("statestream_state_longer_than_255", f"{SS}/state", b"y" * 300, Reason.SCHEMA),
    Bad("statestream_attribute_not_json", f"{SS}/unit_of_measurement", "°C".encode(), Reason.INVALID_JSON),
    Bad("statestream_last_updated_garbage", f"{SS}/last_updated", b"26/11/2026 10:00", Reason.BAD_TIMESTAMP),
    Bad("statestream_empty_attribute_name", f"{SS}/", b'"x"', Reason.BAD_TOPIC),
    Bad("statestream_object_id_uppercase", f"{STATESTREAM}/sensor/Corpus_ss/state", b"21.5", Reason.BAD_ENTITY_ID),
    Bad("statestream_object_id_space", f"{STATESTREAM}/sensor/corpus ss/state", b"21.5", Reason.BAD_ENTITY_ID),
    Bad("statestream_object_id_comma", f"{STATESTREAM}/sensor/corpus,ss/state", b"21.5", Reason.BAD_ENTITY_ID),
    Bad("statestream_object_id_quote", f'{STATESTREAM}/sensor/corpus"ss/state', b"21.5", Reason.BAD_ENTITY_ID),
    Bad("statestream_state_newline", f"{STATESTREAM}/sensor/corpus_ss_text/state", b"line one\nline two",
        Reason.UNWRITABLE),
    Bad("statestream_state_nan", f"{STATESTREAM}/sensor/corpus_ss_nan/state", b"NaN", Reason.NON_FINITE),
    # -- MQTT discovery: configs, then states on topics learned from configs (see `setup_discovery`)
    Bad("discovery_config_not_json", f"{DISCOVERY}/sensor/corpus_broken/config",
        b'{"state_topic": "@PREFIX@zigbee2mqtt/corpus_broken", "value_template": ', Reason.INVALID_JSON),
    Bad("discovery_config_list", f"{DISCOVERY}/sensor/corpus_list/config", b'["@PREFIX@zigbee2mqtt/corpus_list"]',
        Reason.SCHEMA),
    Bad("discovery_component_uppercase", f"{DISCOVERY}/Sensor/corpus_upper/config",
        config("corpus_upper", "zigbee2mqtt/corpus_upper", "{{ value_json.t }}"), Reason.BAD_TOPIC),
    Bad("discovery_object_id_with_dot", f"{DISCOVERY}/sensor/corpus.dot/config",
        config("corpus_dot", "zigbee2mqtt/corpus_dot", "{{ value_json.t }}"), Reason.BAD_TOPIC),
    Bad("discovery_state_topic_wildcard", f"{DISCOVERY}/sensor/corpus_wild/config",
        config("corpus_wild", "zigbee2mqtt/+", "{{ value_json.t }}"), Reason.BAD_TOPIC),
    Bad("discovery_config_unsupported_template", f"{DISCOVERY}/sensor/corpus_doubled/config",
        config("corpus_doubled", "zigbee2mqtt/corpus_doubled", "{{ value_json.x * 2 }}"),
        Reason.UNSUPPORTED_TEMPLATE),
    Bad("discovery_state_unsupported_template", TEMPLATED, b'{"x": 21}', Reason.UNSUPPORTED_TEMPLATE),
    # The temperature in this message is written; only the pressure entity's key is missing.
    Bad("discovery_state_key_missing", METER, b'{"temperature": 23.45, "linkquality": 80}', Reason.SCHEMA,
        "'pressure' missing"),
    Bad("discovery_state_not_json", METER, b"offline", Reason.INVALID_JSON),
    # -- birth / last will, and a topic no source owns
    Bad("status_unknown_payload", STATUS, b"restarting", Reason.SCHEMA),
    Bad("status_wrong_case", STATUS, b"ONLINE", Reason.SCHEMA),
    Bad("topic_no_source_owns", LEGACY, reading("sensor.corpus_legacy", "9.5"), Reason.SCHEMA,
        "no configured source owns"),
    # -- input that once crashed a parser or a flush (kept last: a crash costs a worker restart)
    Bad("json_nested_too_deep", EVENTS, b'{"event_type": "state_changed", "event_data": ' + b"[" * DEEP
        + b"]" * DEEP + b"}", Reason.INVALID_JSON),
    Bad("json_integer_5000_digits", EVENTS, b'{"event_type": "state_changed", "event_data": {"n": ' + b"9" * 5_000
        + b"}}", Reason.INVALID_JSON),
    Bad("statestream_attribute_nested_too_deep", f"{SS}/friendly_name", b"[" * DEEP + b"]" * DEEP,
        Reason.INVALID_JSON),
    Bad("discovery_config_nested_too_deep", f"{DISCOVERY}/sensor/corpus_deep/config",
        b'{"state_topic": "@PREFIX@zigbee2mqtt/corpus_deep", "device": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        Reason.INVALID_JSON),
    # JSON's \ud800 escape: valid UTF-8 on the wire, a lone surrogate once decoded; no UTF-8 line can carry it.
    Bad("state_lone_surrogate", EVENTS, reading("sensor.corpus_surrogate", "\ud800"), Reason.UNWRITABLE),
]


def setup_discovery(tenant: Tenant) -> list[tuple[str, str, bytes, Reason, str]]:
    """Retained configs and a retained first state, published before the worker starts: every worker that
    subscribes gets them in order, so the learned state topics are subscribed before the corpus runs.
    Returns the dead letters this setup itself produces (per worker start)."""
    meter_device = {"identifiers": ["corpus_meter_0001"], "name": "corpus_meter", "manufacturer": "Test"}
    configs = [
        (f"{DISCOVERY}/sensor/corpus_meter/temperature/config",
         config("corpus_meter_temperature", METER, "{{ value_json.temperature }}", unit_of_measurement="°C",
                device_class="temperature", device=meter_device)),
        (f"{DISCOVERY}/sensor/corpus_meter/pressure/config",
         config("corpus_meter_pressure", METER, "{{ value_json.pressure }}", unit_of_measurement="hPa",
                device_class="pressure", device=meter_device)),
        (f"{DISCOVERY}/sensor/corpus_templated/x/config",
         config("corpus_templated", TEMPLATED, "{{ value_json.x * 2 }}")),
    ]
    pub = publisher(tenant)
    for suffix, payload in configs:
        pub.publish(payload.replace(PREFIX, tenant.env["HATS_TOPIC_PREFIX"].encode()), topic=topic(tenant, suffix),
                    retain=True)
    pub.publish(b'{"temperature": 20.5, "pressure": 1013.2, "linkquality": 90}', topic=topic(tenant, METER),
                retain=True)
    pub.close()
    suffix, payload = configs[-1]
    return [("setup: unsupported template config", topic(tenant, suffix),
             payload.replace(PREFIX, tenant.env["HATS_TOPIC_PREFIX"].encode()), Reason.UNSUPPORTED_TEMPLATE, "")]


def letters(tenant: Tenant) -> list[tuple[str, bytes, str, str]]:
    rows = pg_rows(tenant, "SELECT topic, payload, reason, detail FROM ops.dead_letters WHERE tenant_id = %s "
                           "ORDER BY id", tenant.name)
    return [(t, bytes(p), r, d) for t, p, r, d in rows]


def letter_count(tenant: Tenant) -> int:
    return int(pg_rows(tenant, "SELECT count(*) FROM ops.dead_letters WHERE tenant_id = %s", tenant.name)[0][0])


def values_of(tenant: Tenant, entity_id: str) -> list[float]:
    return sorted(row["value"] for row in entity_points(tenant, entity_id))


class CorpusRun:
    """The worker under the corpus, restarted (under a new client id, as the broker would hand the old
    session its unacknowledged poison message again) when a kind crashes or stalls it."""

    def __init__(self, tenant: Tenant, start_worker: Start) -> None:
        self.tenant = tenant
        self.start_worker = start_worker
        self.env = {**tenant.env, "HATS_MAX_PAYLOAD_BYTES": str(MAX_PAYLOAD_BYTES), "HATS_BATCH_MAX_AGE_S": "0.05"}
        self.pub: Publisher = publisher(tenant)
        self.setup_letters = setup_discovery(tenant)
        self.expected = list(self.setup_letters)
        self.starts = 0
        self.lost = 0  # dead letters of kinds that crashed or stalled a worker: not waited for again
        self.worker = self.start()

    def start(self) -> WorkerProcess:
        env = self.tenant.env
        client_id = f"hats-test-{self.tenant.name}-{self.starts}"
        with session(int(env["HATS_MQTT_PORT"]), env["HATS_MQTT_USERNAME"], env["HATS_MQTT_PASSWORD"],
                     client_id=client_id, clean_start=False, v311=True) as legacy:
            assert legacy.subscribe(topic(self.tenant, LEGACY)) == 1
        self.starts += 1
        worker = self.start_worker({**self.env, "HATS_MQTT_CLIENT_ID": client_id})
        # Each new session gets the retained first state once: then the learned state topics are subscribed.
        wait_for(lambda: values_of(self.tenant, "sensor.corpus_meter_temperature").count(20.5) == self.starts,
                 "the retained discovery state")
        wait_for(lambda: letter_count(self.tenant) >= len(self.expected) - self.lost, "the setup's dead letters")
        return worker

    def restart(self) -> None:
        if self.worker.proc.poll() is None:
            self.worker.kill()
        self.expected.extend(self.setup_letters)  # the retained setup is delivered to the new session again
        self.worker = self.start()

    def publish_good(self, i: int) -> None:
        """The good neighbours of kind i, unless already written: an eventstream and a statestream state."""
        if float(i) not in values_of(self.tenant, "sensor.corpus_good"):
            good = state_changed("sensor.corpus_good", f"{i}", AT + timedelta(seconds=i), unit_of_measurement="W",
                                 device_class="power")
            self.pub.publish(good, topic=topic(self.tenant, EVENTS))
        if float(i) not in values_of(self.tenant, "sensor.corpus_ss_good"):
            self.pub.publish(f"{i}".encode(), topic=topic(self.tenant, f"{STATESTREAM}/sensor/corpus_ss_good/state"))

    def settle(self, i: int) -> str | None:
        """Wait until kind i's good neighbours are written and its dead letter stored; say what went wrong."""
        def landed() -> bool:
            return (float(i) in values_of(self.tenant, "sensor.corpus_good")
                    and float(i) in values_of(self.tenant, "sensor.corpus_ss_good"))

        def done() -> bool:
            exited = self.worker.proc.poll() is not None
            return exited or (landed() and letter_count(self.tenant) >= len(self.expected) - self.lost)

        settled = until(done, SETTLE_S)
        if self.worker.proc.poll() is not None:
            lines = [line for line in self.worker.output().splitlines() if line.strip()]
            return f"the worker exited ({self.worker.proc.returncode}): {lines[-1] if lines else ''}"
        if not settled:
            health = "/healthz 200" if healthy(self.worker) else "/healthz failing"
            return (f"no dead letter stored: the batch's PostgreSQL part failed, or the message was dropped ({health})"
                    if landed() else f"the worker stalled: the good messages after it were not written ({health})")
        if not healthy(self.worker):
            return "/healthz did not answer 200"
        return None


def until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll like `wait_for`, but report the deadline instead of failing: here a stall is a finding."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def test_bad_input_corpus(tenant: Tenant, start_worker: Start) -> None:
    assert len(CORPUS) >= 30
    assert len({bad.kind for bad in CORPUS}) == len(CORPUS)
    assert len({(bad.topic, bad.payload) for bad in CORPUS}) == len(CORPUS)  # each letter is traceable
    assert MAX_PAYLOAD_BYTES < len(forecast(1_500)) < BROKER_MAX_PACKET_BYTES - 1024  # over ours, not the broker's
    run = CorpusRun(tenant, start_worker)
    problems: list[str] = []
    troubled: set[str] = set()
    try:
        for i, bad in enumerate(CORPUS):
            run.pub.publish(bad.payload_for(tenant), topic=topic(tenant, bad.topic))
            run.expected.append((bad.kind, topic(tenant, bad.topic), bad.payload_for(tenant), bad.reason,
                                 bad.detail))
            run.publish_good(i)
            trouble = run.settle(i)
            if trouble is not None:
                problems.append(f"{bad.kind}: {trouble}")
                troubled.add(bad.kind)
                run.lost += 1
                run.restart()
                run.publish_good(i)
                assert run.settle(i) is None, f"the restarted worker did not recover after {bad.kind}"
    finally:
        run.pub.close()

    # Every good neighbour written exactly once, the sibling of a failing discovery entity too.
    n = len(CORPUS)
    for entity_id in ("sensor.corpus_good", "sensor.corpus_ss_good"):
        if values_of(tenant, entity_id) != [float(i) for i in range(n)]:
            problems.append(f"good messages of {entity_id}: {values_of(tenant, entity_id)} instead of 0..{n - 1}")
    if 23.45 not in values_of(tenant, "sensor.corpus_meter_temperature"):
        problems.append("discovery_state_key_missing: the temperature of the same message was not written")

    # Exactly the expected dead letters: exact topic and payload bytes, reason code, detail.
    remaining = letters(tenant)
    for kind, where, payload, reason, detail in run.expected:
        found = next((row for row in remaining if row[:2] == (where, payload)), None)
        if found is None:
            elsewhere = next((row for row in remaining if row[1] == payload), None)
            if elsewhere is None:
                if kind not in troubled:  # a crash or stall already said why
                    problems.append(f"{kind}: no dead letter with its topic and exact payload")
                continue
            problems.append(f"{kind}: dead-lettered ({elsewhere[2]}) under topic {elsewhere[0]!r}, not {where!r}")
            found = elsewhere
        remaining.remove(found)
        if found[2] != reason:
            problems.append(f"{kind}: reason {found[2]!r}, expected {reason.value!r} ({found[3][:160]})")
        if detail not in found[3]:
            problems.append(f"{kind}: detail {found[3][:160]!r} does not say {detail!r}")
    problems += [f"unexpected dead letter {r}: {d[:120]} on {t!r}, payload {p[:60]!r}" for t, p, r, d in remaining]

    if not healthy(run.worker):
        problems.append("the worker is not healthy after the corpus")
    assert not problems, f"{len(problems)} problem(s) with {n} bad-input kinds:\n" + "\n".join(problems)
    assert run.worker.stop() == 0


def test_valid_edge_cases_are_written_not_dead_lettered(tenant: Tenant, start_worker: Start) -> None:
    """A unit change on one entity (W, then kW) stays one series in `power`, converted; the longest of
    Home Assistant's device classes is a measurement; strings that line protocol must escape land exactly."""
    worker = start_worker(tenant.env)
    pub = publisher(tenant)
    pub.publish(state_changed("sensor.corpus_power", "1500", AT, unit_of_measurement="W", device_class="power"))
    pub.publish(state_changed("sensor.corpus_power", "2.5", AT + timedelta(seconds=1), unit_of_measurement="kW",
                              device_class="power"))
    pub.publish(state_changed("sensor.corpus_aq", "42", AT, device_class="volatile_organic_compounds_parts"))
    pub.publish(state_changed("sensor.corpus_quote", 'say "hi" \\ bye', AT))
    pub.publish(state_changed("sensor.corpus_kueche", "19.5", AT, unit_of_measurement="°C",
                              friendly_name="Küche 🌡 \"Nord\""))
    # PostgreSQL text cannot hold NUL: a name is metadata, so it is cleaned, and the reading still lands.
    pub.publish(state_changed("sensor.corpus_nul", "10.5", AT, unit_of_measurement="W", friendly_name="Porch\u0000"))
    pub.close()
    wait_for(lambda: len(select(tenant, "SELECT * FROM raw./.*/")) == 6, "six points")

    power = entity_points(tenant, "sensor.corpus_power")
    assert [(row["measurement"], row["time"], row["value"]) for row in power] == [
        ("power", ns(AT), 1500.0), ("power", ns(AT + timedelta(seconds=1)), 2500.0)]
    assert pg_rows(tenant, "SELECT unit_original, unit_canonical, conversion FROM core.entities "
                           "WHERE tenant_id = %s AND entity_id = 'sensor.corpus_power'", tenant.name) == [
        ("kW", "W", "kW->W")]
    assert [(row["measurement"], row["value"]) for row in entity_points(tenant, "sensor.corpus_aq")] == [
        ("volatile_organic_compounds_parts", 42.0)]
    assert [(row["measurement"], row["state"]) for row in entity_points(tenant, "sensor.corpus_quote")] == [
        ("state", 'say "hi" \\ bye')]
    assert [(row["measurement"], row["value"]) for row in entity_points(tenant, "sensor.corpus_kueche")] == [
        ("temperature", 19.5)]
    assert pg_rows(tenant, "SELECT friendly_name FROM core.entities WHERE tenant_id = %s "
                           "AND entity_id = 'sensor.corpus_kueche'", tenant.name) == [("Küche 🌡 \"Nord\"",)]
    assert pg_rows(tenant, "SELECT friendly_name FROM core.entities WHERE tenant_id = %s "
                           "AND entity_id = 'sensor.corpus_nul'", tenant.name) == [("Porch",)]
    assert [row["value"] for row in entity_points(tenant, "sensor.corpus_nul")] == [10.5]
    assert letters(tenant) == []
    assert worker.stop() == 0


def test_series_budget_flood(tenant: Tenant, start_worker: Start) -> None:
    """10,000 new entities against a budget of 50: the first 50 are written, every other one is a dead
    letter with reason series_budget and its exact payload, and the worker stays healthy."""
    pg_rows(tenant, "UPDATE core.tenants SET series_budget = 50 WHERE tenant_id = %s RETURNING 1", tenant.name)
    worker = start_worker(tenant.env)  # the budget is the home's row
    payloads = [state_changed(f"sensor.flood_{i:05d}", f"{i % 100}.5", AT, unit_of_measurement="W",
                              device_class="power") for i in range(10_000)]
    pub = publisher(tenant)
    for payload in payloads:
        pub.publish(payload)
    pub.close()
    wait_for(lambda: letter_count(tenant) >= 9_950, "9950 dead letters", timeout=120)
    wait_for(lambda: points(tenant) >= 50, "50 points")

    assert healthy(worker)
    assert points(tenant) == 50
    written = {row["entity_id"] for row in select(tenant, "SELECT * FROM raw.power")}
    assert written == {f"sensor.flood_{i:05d}" for i in range(50)}  # one publisher: arrival order is kept
    stored = letters(tenant)
    assert Counter(reason for _, _, reason, _ in stored) == {Reason.SERIES_BUDGET.value: 9_950}
    assert {where for where, _, _, _ in stored} == {tenant.topic}
    assert sorted(payload for _, payload, _, _ in stored) == sorted(payloads[50:])
    assert pg_rows(tenant, "SELECT count(*) FROM core.entities WHERE tenant_id = %s", tenant.name) == [(50,)]
    assert sample(worker, "hats_dead_letters_total", reason="series_budget") == 9_950
    assert worker.stop() == 0
    counters = worker.counters()
    assert (counters["received"], counters["written"], counters["dead_letter:series_budget"]) == (10_000, 50, 9_950)


def test_rejected_entity_ids_do_not_use_up_the_series_budget(tenant: Tenant, start_worker: Start) -> None:
    """An entity id that is refused never becomes a series, so it must not take a place in the budget."""
    pg_rows(tenant, "UPDATE core.tenants SET series_budget = 3 WHERE tenant_id = %s RETURNING 1", tenant.name)
    worker = start_worker(tenant.env)
    pub = publisher(tenant)
    for i in range(3):
        pub.publish(state_changed(f"sensor.Refused_{i}", "1.5", AT))
    pub.publish(state_changed("sensor.admitted", "2.5", AT))
    pub.close()
    wait_for(lambda: points(tenant) + letter_count(tenant) == 4, "all four messages written or dead-lettered")
    stored = Counter(reason for _, _, reason, _ in letters(tenant))
    assert stored == {Reason.BAD_ENTITY_ID.value: 3}, f"sensor.admitted refused after 3 refused ids: {stored}"
    assert values_of(tenant, "sensor.admitted") == [2.5]
    assert worker.stop() == 0
