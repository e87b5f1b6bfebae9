"""The filters a client id's persistent session holds at the broker, kept on disk beside its outbox.

Why: a restarted worker re-sends its SUBSCRIBEs, but Mosquitto answers them only after the backlog it
queued for the session (its in-flight window first: the soak saw the SUBACK 77 s after CONNACK), so a
worker that waits for the SUBACK reports not ready while it is consuming. When the broker says the session
is still there (CONNACK `session_present`) and the session was granted the very filters configured now
(this file, written as SUBACKs grant and UNSUBACKs remove them), no message can reach the session without
them: the worker is ready at CONNACK. A filter not in the file (a new one, another share group) still
waits for its SUBACK. A new session (no `session_present`) empties the file. The file is a hint for
readiness only, never for what is received: the SUBSCRIBEs are re-sent on every connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "session_filters.json"


class SessionFilters:
    """The granted filters (as subscribed: `$share/<group>/…` included); used on the network thread only."""

    def __init__(self, directory: Path | None) -> None:
        self._path = directory / FILE_NAME if directory is not None else None
        self._filters: set[str] = set()
        self._dirty = False  # changed since the last `flush` (one write per network-loop turn, not per SUBACK)
        if self._path is not None:
            try:
                loaded = json.loads(self._path.read_text())
                self._filters = {f for f in loaded if isinstance(f, str)} if isinstance(loaded, list) else set()
            except FileNotFoundError:  # a first start: no session yet, nothing to say
                pass
            except (OSError, ValueError) as exc:  # unreadable: wait for the SUBACKs, as without a file
                log.warning("ignoring %s (%s): readiness waits for the broker's SUBACKs", self._path, exc)

    def held(self) -> frozenset[str]:
        return frozenset(self._filters)

    def granted(self, subscribed: str) -> None:
        if subscribed not in self._filters:
            self._filters.add(subscribed)
            self._dirty = True

    def removed(self, subscribed: str) -> None:
        if subscribed in self._filters:
            self._filters.discard(subscribed)
            self._dirty = True

    def new_session(self) -> None:
        """The broker kept no session for the client id: it holds none of the filters any more. Written at
        once: a crash before the next turn must not leave the old set to claim the new session has them."""
        if self._filters:
            self._filters.clear()
            self._dirty = True
            self.flush()

    def flush(self) -> None:
        """Write the set if it changed: a SUBACK's grant is recorded within one turn of the network loop
        (a crash before that only makes the next start wait for its SUBACKs)."""
        if not self._dirty or self._path is None:
            return
        self._dirty = False
        self._path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._path.with_suffix(".tmp")
        try:
            with temporary.open("w") as handle:
                json.dump(sorted(self._filters), handle)
                handle.flush()
                os.fsync(handle.fileno())
            temporary.replace(self._path)  # a reader (the next process) sees the old set or the new, never half
        except OSError as exc:  # the disk full or read-only: readiness then waits for SUBACKs next time
            log.warning("could not record the session's filters in %s (%s)", self._path, exc)
            with contextlib.suppress(OSError):
                self._path.unlink()
