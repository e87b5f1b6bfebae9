"""Which sources a worker runs, built from its settings, in routing order.

Fixed topics are routed first and discovery last, so that a hostile discovery config whose
`state_topic` names an eventstream or statestream topic cannot capture that traffic.
"""

from __future__ import annotations

from ingest_worker.settings import WorkerSettings
from ingest_worker.sources.base import Source
from ingest_worker.sources.discovery import DiscoverySource
from ingest_worker.sources.eventstream import EventstreamSource
from ingest_worker.sources.statestream import StatestreamSource
from ingest_worker.sources.status import StatusSource
from ingest_worker.sources.websocket import DeviceLookup, WebsocketSource

# Never split by a shared subscription: discovery and status are retained topics every replica must see
# whole, and a statestream state must meet its attribute topics (unit, device_class) in one worker. So
# replicas of one tenant split eventstream and discovery state traffic; statestream belongs to one of
# them (HATS_SOURCES), or replicas split by tenant.
UNSHARED_SOURCES = frozenset({"discovery", "status", "statestream"})


def build_sources(settings: WorkerSettings, device_of: DeviceLookup | None = None) -> list[Source]:
    """`device_of` is the WebSocket source's registry lookup (the dead-letter replay has none)."""
    chosen = settings.source_names()
    sources: list[Source] = []
    if "websocket" in chosen:  # owns the `websocket:` items the HA link queues, never an MQTT topic it subscribed
        sources.append(WebsocketSource(device_of))
    if "status" in chosen:
        sources.append(StatusSource(settings.topic(settings.status_topic)))
    if "eventstream" in chosen:
        sources.append(EventstreamSource(settings.topic(settings.eventstream_topic)))
    if "statestream" in chosen:
        sources.append(StatestreamSource(settings.topic(settings.statestream_base)))
    if "discovery" in chosen:
        sources.append(DiscoverySource(settings.topic(settings.discovery_prefix), tenant_prefix=settings.topic_prefix,
                                       state_filters=settings.discovery_state_filter_list()))
    return sources


def subscription_filters(sources: list[Source]) -> list[tuple[str, bool]]:
    """(filter, shared) to subscribe at start; discovery's state filters are shared like the state topics it
    learns (replicas split device traffic), its configs are not."""
    found = [(f, source.name not in UNSHARED_SOURCES) for source in sources for f in source.filters()]
    found += [(f, True) for source in sources if isinstance(source, DiscoverySource) for f in source.state_filters]
    return found
