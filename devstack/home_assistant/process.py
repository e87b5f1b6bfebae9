"""`hass --skip-pip -c <config_dir>` as a plain process on loopback: started, awaited, stopped.

Readiness is HA's HTTP server answering `/manifest.json` (it listens once the integrations are set up),
polled against a deadline; stop is SIGTERM to its process group, SIGKILL after a bound. The pid file
in the config folder lets a later session stop a Home Assistant that a crashed one left behind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from devstack.home_assistant.install import Installation
from devstack.procs import Managed, StackError, port_open

START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.2
LOG_TAIL_LINES = 30


@dataclass(frozen=True)
class HassProcess:
    installation: Installation
    config_dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def managed(self) -> Managed:
        return Managed(f"Home Assistant {self.installation.version}", self.config_dir / "hass.pid",
                       self.config_dir / "hass.out")

    @property
    def log(self) -> Path:
        return self.config_dir / "home-assistant.log"

    def start(self, timeout: float = START_TIMEOUT_S) -> float:
        """Start HA and wait until its API answers; returns the seconds it took."""
        if port_open(self.port):
            raise StackError(f"port {self.port} is taken; Home Assistant cannot listen on it")
        started = time.monotonic()
        self.managed.start([str(self.installation.hass), "--skip-pip", "-c", str(self.config_dir)],
                           cwd=self.config_dir)
        deadline = started + timeout
        while not self._api_answers():
            if not self.managed.running():
                raise StackError(f"{self.managed.name} exited while starting{self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise StackError(f"{self.managed.name} did not answer on {self.url} "
                                 f"within {timeout:.0f} s{self.tail()}")
            time.sleep(POLL_INTERVAL_S)
        return time.monotonic() - started

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        return self.managed.stop(timeout=timeout)

    def running(self) -> bool:
        return self.managed.running()

    def pid(self) -> int | None:
        return self.managed.pid()

    def _api_answers(self) -> bool:
        try:
            # The frontend's manifest needs no token (so no "invalid authentication" warning) and exists
            # before and after onboarding; HA's HTTP server listens only once bootstrap set up everything.
            return httpx.get(f"{self.url}/manifest.json", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def tail(self) -> str:
        lines: list[str] = []
        for path in (self.managed.log, self.log):
            if path.exists():
                lines += [f"  {path.name}:", *path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]]
        return ("\n" + "\n    ".join(lines)) if lines else ""
