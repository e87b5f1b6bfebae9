"""Prometheus metrics of the worker: what came in, what went where, how deep the backlog is."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # type: ignore[no-untyped-call]  # the _created samples double every series and answer no operator question

REGISTRY = CollectorRegistry(auto_describe=True)

RECEIVED = Counter("hats_messages_received", "Messages received, by source (the MQTT formats, websocket)",
                   ["source"], registry=REGISTRY)
IGNORED = Counter("hats_messages_ignored", "Valid messages that carry no state (counted, not stored)",
                  ["source", "why"], registry=REGISTRY)
WRITTEN = Counter("hats_points_written", "Points accepted by InfluxDB (directly or from the outbox)",
                  registry=REGISTRY)
DEAD_LETTERED = Counter("hats_dead_letters", "Messages sent to ops.dead_letters", ["reason"], registry=REGISTRY)
INFLUX_ERRORS = Counter("hats_influx_errors", "Failed InfluxDB writes (timeouts, 5xx, connection)", ["kind"],
                        registry=REGISTRY)
OUTBOX_RECORDS = Gauge("hats_outbox_batches", "Batches waiting in the on-disk outbox", registry=REGISTRY)
OUTBOX_BYTES = Gauge("hats_outbox_bytes", "Bytes waiting in the on-disk outbox", registry=REGISTRY)
INBOX_DEPTH = Gauge("hats_inbox_depth", "Messages received but not yet processed", registry=REGISTRY)
UNACKED = Gauge("hats_unacked_messages", "Messages processed but not yet durable (not yet acknowledged)",
                registry=REGISTRY)
CONSUMER_LAG = Gauge("hats_consumer_lag_seconds", "Age of the oldest message not yet acknowledged",
                     registry=REGISTRY)
BATCH_SIZE = Histogram("hats_batch_points", "Points per InfluxDB write", registry=REGISTRY,
                       buckets=(1, 10, 100, 500, 1_000, 2_000, 5_000, 10_000, 50_000))
WRITE_LATENCY = Histogram("hats_write_seconds", "InfluxDB write latency", registry=REGISTRY,
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
EVENT_AGE = Histogram("hats_event_age_seconds", "Receipt time minus the state's own timestamp", registry=REGISTRY,
                      buckets=(0.01, 0.1, 0.5, 1, 5, 30, 60, 300, 3_600, 86_400))
# Settling (settling.py): after a (re)connect, messages no source owns wait for the broker's retained replay.
PARKED = Gauge("hats_parked_messages", "Messages no source owns yet, waiting unacknowledged for the retained "
               "discovery configs the broker replays after a (re)connect", registry=REGISTRY)
PARKED_RELEASED = Counter("hats_parked_released", "Parked messages once the replay was processed: owned, handled "
                          "by the source a config made; unowned, dead letters; over_bound, dead letters at once "
                          "because MAX_PARKED were waiting", ["outcome"], registry=REGISTRY)
MQTT_CONNECTED = Gauge("hats_mqtt_connected", "1 while connected to the broker", registry=REGISTRY)
RECEIPTS_KEPT = Gauge("hats_receipt_times_kept", "Receipt times kept for messages the broker has not confirmed "
                      "as acknowledged (receipts.py): bounded by its in-flight window, growing without bound "
                      "if the broker never answers the acknowledgement barrier", registry=REGISTRY)
# /readyz as a number, so Prometheus (which scrapes /metrics, not /readyz) can alert on a worker that is up
# but not taking work (broker lost, subscriptions refused, outbox full).
READY = Gauge("hats_ready", "1 while /readyz answers 200 (connected and able to take work)", registry=REGISTRY)
HA_CONNECTED = Gauge("hats_ha_connected", "1 while subscribed to Home Assistant's WebSocket API", registry=REGISTRY)
HA_RECONNECTS = Counter("hats_ha_reconnects", "WebSocket connections to Home Assistant lost or refused",
                        registry=REGISTRY)
HA_HISTORY_ROWS = Counter("hats_ha_history_rows", "States fetched from Home Assistant's recorder to fill gaps",
                          registry=REGISTRY)
HA_GAP_FILL_SECONDS = Gauge("hats_ha_gap_fill_seconds", "Duration of the latest gap fill (history since the "
                            "resume point, then the recorder's uncommitted tail)", registry=REGISTRY)

# Registry mode (homes.py): one series per home of the shard, never per entity (1,000 homes × 8 is bounded).
TENANTS = Gauge("hats_tenants_served", "Homes this worker serves (registry mode)", registry=REGISTRY)
TENANT_FAILURES = Counter("hats_tenant_failures", "Times a home could not be started or failed while served",
                          ["tenant"], registry=REGISTRY)
TENANT_RECEIVED = Counter("hats_tenant_messages_received", "Messages received per home", ["tenant"],
                          registry=REGISTRY)
TENANT_WRITTEN = Counter("hats_tenant_points_written", "Points InfluxDB accepted per home (direct writes)",
                         ["tenant"], registry=REGISTRY)
TENANT_DEAD_LETTERS = Counter("hats_tenant_dead_letters", "Dead letters per home", ["tenant"], registry=REGISTRY)
TENANT_QUEUED = Gauge("hats_tenant_queued_messages", "Messages routed to a home, not yet parsed", ["tenant"],
                      registry=REGISTRY)
TENANT_OUTBOX_BYTES = Gauge("hats_tenant_outbox_bytes", "Bytes waiting in a home's outbox", ["tenant"],
                            registry=REGISTRY)
TENANT_READY = Gauge("hats_tenant_ready", "1 while a home is subscribed and its outbox has room", ["tenant"],
                     registry=REGISTRY)

# Traces (ingest_worker/tracing/): exported only when an OTLP endpoint is configured.
TRACE_SPANS_EXPORTED = Counter("hats_trace_spans_exported", "Spans the OTLP collector accepted (tracing on)",
                               registry=REGISTRY)
TRACE_SPANS_DROPPED = Counter("hats_trace_spans_dropped", "Spans lost (tracing on): queue_full, the export queue "
                              "was full (the collector slow or away); export_failed, a request to the collector "
                              "failed", ["reason"], registry=REGISTRY)
TLS_CERT_NOT_AFTER = Gauge("hats_tls_cert_not_after_seconds",
                           "notAfter (Unix seconds) of the certificate each TLS peer presented to the worker's "
                           "latest handshake (every HATS_TLS_PROBE_S; PostgreSQL's read via SSLRequest as libpq does)",
                           ["peer"], registry=REGISTRY)
