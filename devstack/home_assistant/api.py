"""Home Assistant's REST and WebSocket APIs with a token, as the tests and the provisioning use them.

One short WebSocket connection per call (auth → command → result) keeps the client stateless; on
loopback it costs a few milliseconds.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import httpx
from websockets.sync.client import connect

REQUEST_TIMEOUT_S = 30.0


class HomeAssistantApiError(RuntimeError):
    """Home Assistant refused a request; the message carries its answer."""


class HomeAssistantApi:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self._ids = itertools.count(1)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def request(self, method: str, path: str, body: object = None, params: dict[str, str] | None = None) -> Any:
        response = httpx.request(method, f"{self.url}{path}", json=body, params=params, headers=self.headers,
                                 timeout=REQUEST_TIMEOUT_S)
        if response.status_code >= 400:
            raise HomeAssistantApiError(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: object = None) -> Any:
        return self.request("POST", path, body)

    def config(self) -> dict[str, Any]:
        """`GET /api/config`: version, time zone, loaded components, state (RUNNING once started)."""
        found: dict[str, Any] = self.get("/api/config")
        return found

    def state(self, entity_id: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.get(f"/api/states/{entity_id}")
        except HomeAssistantApiError as exc:
            if " 404:" in str(exc):
                return None
            raise
        return found

    def set_state(self, entity_id: str, state: str, attributes: dict[str, Any] | None = None) -> dict[str, Any]:
        """`POST /api/states/<entity_id>`: creates or updates an entity that no integration owns."""
        written: dict[str, Any] = self.post(f"/api/states/{entity_id}",
                                            {"state": state, "attributes": attributes or {}})
        return written

    def call_service(self, domain: str, service: str, data: dict[str, Any] | None = None) -> Any:
        return self.post(f"/api/services/{domain}/{service}", data or {})

    def set_number(self, entity_id: str, value: float) -> None:
        """Set an `input_number` (the template sensors follow it)."""
        self.call_service("input_number", "set_value", {"entity_id": entity_id, "value": value})

    def history(self, entity_ids: Iterable[str], start: datetime, end: datetime) -> dict[str, list[dict[str, Any]]]:
        """HA's own record of the states in [start, end], per entity: the independent reference."""
        ids = list(entity_ids)
        params = {"filter_entity_id": ",".join(ids), "end_time": end.isoformat(), "minimal_response": "",
                  "no_attributes": "", "significant_changes_only": "0"}
        answer: list[list[dict[str, Any]]] = self.get(f"/api/history/period/{start.isoformat()}", params)
        found: dict[str, list[dict[str, Any]]] = {entity: [] for entity in ids}
        for states in answer:
            if states:
                entity = states[0]["entity_id"]
                found[entity] = [{**s, "entity_id": entity} for s in states]
        return found

    def ws_call(self, command: str, **payload: Any) -> Any:
        """One WebSocket command (`{"type": command, **payload}`); returns its `result`."""
        ws_url = self.url.replace("http://", "ws://", 1) + "/api/websocket"
        with connect(ws_url, open_timeout=REQUEST_TIMEOUT_S, max_size=None) as ws:
            hello = json.loads(ws.recv(timeout=REQUEST_TIMEOUT_S))
            if hello.get("type") != "auth_required":
                raise HomeAssistantApiError(f"unexpected WebSocket greeting {hello}")
            ws.send(json.dumps({"type": "auth", "access_token": self.token}))
            auth = json.loads(ws.recv(timeout=REQUEST_TIMEOUT_S))
            if auth.get("type") != "auth_ok":
                raise HomeAssistantApiError(f"WebSocket auth failed: {auth}")
            call_id = next(self._ids)
            ws.send(json.dumps({"id": call_id, "type": command, **payload}))
            while True:
                message = json.loads(ws.recv(timeout=REQUEST_TIMEOUT_S))
                if message.get("id") == call_id and message.get("type") == "result":
                    break
        if not message.get("success"):
            raise HomeAssistantApiError(f"{command} failed: {message.get('error')}")
        return message.get("result")

    def statistics_during_period(self, statistic_ids: Iterable[str], start: datetime, end: datetime | None = None,
                                 period: str = "hour", types: Iterable[str] | None = None) -> dict[str, Any]:
        """`recorder/statistics_during_period`: HA's long-term (hour) or short-term (5minute) statistics."""
        payload: dict[str, Any] = {"statistic_ids": list(statistic_ids), "start_time": start.isoformat(),
                                   "period": period}
        if end is not None:
            payload["end_time"] = end.isoformat()
        if types is not None:
            payload["types"] = list(types)
        found: dict[str, Any] = self.ws_call("recorder/statistics_during_period", **payload)
        return found
