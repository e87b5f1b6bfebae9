"""Store faults in the middle of a Dagster step, for the fault tests: the test stack's real InfluxDB or
PostgreSQL is stopped at a chosen point of the step and started again when the step's retry begins.

The point is counted, not timed: InfluxDB is stopped just before the step's N-th write request (a
``/write``, or a statement that changes data or policies), PostgreSQL just after the step's N-th completed
transaction block. A clean run through the same resources (no ``stop_at``) counts them, so a test can stop
a store in the middle of exactly the work a clean run does. ``crash`` interrupts the step at that point
instead, as terminating or killing the run would: no error handler of the step runs. ``recover`` runs in
the step's own thread at its first call to the stopped store after Dagster scheduled the retry
(``STEP_UP_FOR_RETRY`` in the run's event log), before that call goes out: state can be changed there,
between the failure and the retry, deterministically.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import httpx
import psycopg

from devstack import influxdb, postgres
from devstack.profile import Profile
from hats_assets.defs.common.influx_retention import InfluxRetentionResource
from hats_assets.defs.common.resources import InfluxDBResource, PostgresResource

INFLUXDB, POSTGRESQL = "influxdb", "postgresql"
WRITE_STATEMENTS = ("DELETE", "DROP", "ALTER", "CREATE", "GRANT", "REVOKE")


@dataclass
class Fault:
    """One fault plan and what happened; shared by the resources of a run through ``FAULTS``."""

    profile: Profile
    secrets: dict[str, str]
    store: str = INFLUXDB
    stop_at: int | None = None
    recover: Callable[[], None] | None = None
    comes_back: bool = True  # False: the store stays down through every retry (the test starts it again)
    crash: bool = False  # instead of stopping InfluxDB, interrupt the step there (a run terminated or killed)
    writes: int = 0
    blocks: int = 0
    tripped: bool = False
    recovered: bool = False
    run_id: str = ""
    instance: dg.DagsterInstance | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)

    def before_call(self, store: str, write: bool) -> None:
        with self.lock:
            if (self.comes_back and store == self.store and self.tripped and not self.recovered
                    and self._retry_scheduled()):
                self.recovered = True
                self.start()
                if self.recover is not None:
                    self.recover()
            if write:
                self.writes += 1
                if self.store == INFLUXDB and self.writes == self.stop_at and not self.tripped:
                    self.tripped = True
                    if self.crash:  # no `except Exception` of the step sees it, as none runs after a kill
                        raise KeyboardInterrupt
                    influxdb.stop(self.profile)

    def after_block(self) -> None:
        with self.lock:
            self.blocks += 1
            if self.store == POSTGRESQL and self.blocks == self.stop_at and not self.tripped:
                self.tripped = True
                postgres.stop(self.profile)

    def start(self) -> None:
        """The stopped store, back (idempotent)."""
        if self.store == INFLUXDB:
            influxdb.start(self.profile, self.secrets)
        else:
            postgres.start(self.profile, self.secrets)

    def _retry_scheduled(self) -> bool:
        if self.instance is None:
            return False
        return bool(self.instance.get_records_for_run(
            self.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY).records)


FAULTS: dict[str, Fault] = {}


def _attach(name: str, context: dg.InitResourceContext) -> None:
    fault = FAULTS[name]
    fault.run_id, fault.instance = context.run.run_id if context.run else "", context.instance


def _is_write(influxql: str) -> bool:
    statements = [part.strip().upper() for part in influxql.split(";") if part.strip()]
    return any(s.startswith(WRITE_STATEMENTS) or " INTO " in s for s in statements)


class FaultyInfluxDB(InfluxDBResource):
    """The real resource, with the fault ``fault`` (a key of ``FAULTS``) applied before each request."""

    fault: str

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        _attach(self.fault, context)

    def post_query(self, database: str, influxql: str, params: Mapping[str, Any] | None,
                   accept: str) -> httpx.Response:
        FAULTS[self.fault].before_call(INFLUXDB, _is_write(influxql))
        return super().post_query(database, influxql, params, accept)

    def post_write(self, database: str, lines: Sequence[str], rp: str) -> int:
        FAULTS[self.fault].before_call(INFLUXDB, True)
        return super().post_write(database, lines, rp)


class FaultyInfluxRetention(InfluxRetentionResource):
    """The write gate's retention endpoint, with the fault ``fault`` applied before each statement."""

    fault: str

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        _attach(self.fault, context)

    def post_query(self, database: str, influxql: str, params: Mapping[str, Any] | None,
                   accept: str) -> httpx.Response:
        FAULTS[self.fault].before_call(INFLUXDB, _is_write(influxql))
        return super().post_query(database, influxql, params, accept)


class FaultyPostgres(PostgresResource):
    """The real resource; the fault counts its completed transaction blocks."""

    fault: str

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        _attach(self.fault, context)

    @contextlib.contextmanager
    def connect(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        fault = FAULTS[self.fault]
        fault.before_call(POSTGRESQL, False)
        with PostgresResource.connect(self) as conn:
            yield conn
        fault.after_block()
