"""Where `hats import` reads a home's history, chosen by the location: a running Home Assistant's API
(`http(s)://…`, `ws(s)://…`: `history_ws.py`) or its recorder database (a SQLite file, a postgresql:// or
mysql:// URL: `recorder_db.py`, `states.py`, `statistics_db.py`). `History` is what the run (`run.py`)
needs of either, so the run itself is the same: one ops.imports row, states through the door, statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import psycopg

from ingest_worker.door import Door
from ingest_worker.importers.history_ws import is_home_assistant, open_live
from ingest_worker.importers.recorder_db import Recorder, open_recorder
from ingest_worker.importers.states import StatesProgress, StatesReport, import_states
from ingest_worker.settings import WorkerSettings
from ingest_worker.sources.base import Source
from ingest_worker.sources.recorder import RecorderSource

if TYPE_CHECKING:
    from ingest_worker.importers.statistics import StatisticsReader


class History(Protocol):
    kind: str  # ops.imports.source_kind
    source: str  # what to show and record: without secrets
    source_key: str  # ops.import_progress: the same history, whichever way it was reached

    @property
    def headline(self) -> str:
        """What is read, for the run's first line."""
        ...

    def door_source(self) -> Source:
        """The door's source for the items `import_states` pushes."""
        ...

    async def import_home(self, conn: psycopg.AsyncConnection[tuple[object, ...]], tenant: str) -> None:
        """What the history says of the home besides its states (before them; not in a dry run)."""
        ...

    async def import_states(self, door: Door, progress: StatesProgress, raw_days: int, page_rows: int,
                            report: StatesReport, tick: Callable[[StatesReport], None],
                            stop: Callable[[], bool] = lambda: False) -> StatesReport:
        ...

    def statistics(self) -> StatisticsReader:
        ...

    async def aclose(self) -> None:
        ...


class RecorderHistory:
    """A recorder database as a `History`."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self.kind = recorder.kind
        self.source = recorder.source
        self.source_key = recorder.source_key

    @property
    def headline(self) -> str:
        return f"{self.kind} recorder {self.source} (schema {self._recorder.schema_version}, {self.source_key})"

    def door_source(self) -> Source:
        return RecorderSource()

    async def import_home(self, conn: psycopg.AsyncConnection[tuple[object, ...]], tenant: str) -> None:
        """Nothing: the database does not hold the home's configuration (its time zone)."""

    async def import_states(self, door: Door, progress: StatesProgress, raw_days: int, page_rows: int,
                            report: StatesReport, tick: Callable[[StatesReport], None],
                            stop: Callable[[], bool] = lambda: False) -> StatesReport:
        return await import_states(self._recorder, door, progress, raw_days, page_rows, report, tick, stop)

    def statistics(self) -> StatisticsReader:
        # Imported here: the statistics import is its own module, loaded only by runs that use it.
        from ingest_worker.importers.statistics_db import RecorderStatistics

        return RecorderStatistics(self._recorder.qmark, self._recorder.schema_version)

    async def aclose(self) -> None:
        self._recorder.close()


async def open_history(location: str, settings: WorkerSettings) -> History:
    """Open and check `location`; raises `RecorderError` or `ConfigError` before anything is written."""
    if is_home_assistant(location):
        return await open_live(location, settings.ha_token.get_secret_value())
    return RecorderHistory(open_recorder(location))
