"""Parsers for the formats Home Assistant publishes: bytes from a topic in, `EntityState`s out."""

from ingest_worker.sources.base import Outcome, Source
from ingest_worker.sources.discovery import DiscoverySource
from ingest_worker.sources.eventstream import EventstreamSource
from ingest_worker.sources.statestream import StatestreamSource
from ingest_worker.sources.status import StatusSource
from ingest_worker.sources.websocket import WebsocketSource

__all__ = ["DiscoverySource", "EventstreamSource", "Outcome", "Source", "StatestreamSource", "StatusSource",
           "WebsocketSource"]
