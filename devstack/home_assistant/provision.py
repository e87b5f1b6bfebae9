"""Headless provisioning: onboarding over REST, a long-lived token over WebSocket, the MQTT config entry.

What a person clicks through in the frontend, done with the same endpoints: the onboarding user step
returns an auth code, `/auth/token` turns it into an access token, the remaining onboarding steps
(core_config, analytics, integration — the same four in 2024.3 and 2025.4) are finished with it, then
`auth/long_lived_access_token` gives the token the tests keep. The MQTT entry goes through the
config-flow REST API (handler `mqtt`, step `broker`), exactly as the UI would create it. Everything
needed to skip this next time is kept in a 0600 state file beside the config folder.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from devstack.home_assistant.api import HomeAssistantApi, HomeAssistantApiError
from ingest_worker.tls import client_context

USERNAME = "hats"
DISPLAY_NAME = "hats tests"
LANGUAGE = "en"
TOKEN_LIFESPAN_DAYS = 3650
REQUEST_TIMEOUT_S = 30.0
ONBOARDING_STEPS = ("core_config", "analytics", "integration")
# Integrations the core_config step sets up on its own; the tests want none of them (and with
# `--skip-pip` their requirements are missing, so they only log errors at every start).
ONBOARDING_OFFERS = ("google_translate", "met", "radio_browser", "shopping_list")


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    username: str
    password: str
    # The CA a TLS broker's certificate is verified with (the stack's ca.pem); None: a plaintext broker.
    ca_file: Path | None = None

    def tls(self) -> ssl.SSLContext | None:
        return client_context(self.ca_file) if self.ca_file is not None else None


@dataclass
class ProvisionState:
    """What a later start needs to skip onboarding (kept in a 0600 JSON file)."""

    username: str
    password: str
    token: str = ""

    @classmethod
    def load(cls, path: Path) -> ProvisionState | None:
        return cls(**json.loads(path.read_text())) if path.exists() else None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self), handle, indent=2)
        tmp.replace(path)


def token_works(url: str, token: str) -> bool:
    if not token:
        return False
    response = httpx.get(f"{url}/api/", headers={"Authorization": f"Bearer {token}"}, timeout=REQUEST_TIMEOUT_S)
    return response.status_code == 200


def ensure_token(url: str, state_file: Path) -> str:
    """A working long-lived token: the stored one, else onboarding (or a login when already onboarded)."""
    state = ProvisionState.load(state_file)
    if state is not None and token_works(url, state.token):
        return state.token
    client_id = f"{url}/"
    steps = {s["step"]: s["done"] for s in _json(httpx.get(f"{url}/api/onboarding", timeout=REQUEST_TIMEOUT_S))}
    if not steps.get("user"):
        state = ProvisionState(USERNAME, secrets.token_urlsafe(18))
        state.save(state_file)  # the password first: a crash after the user step can still log in
        code = _json(httpx.post(f"{url}/api/onboarding/users", timeout=REQUEST_TIMEOUT_S, json={
            "client_id": client_id, "name": DISPLAY_NAME, "username": state.username,
            "password": state.password, "language": LANGUAGE}))["auth_code"]
    elif state is not None:
        code = _login(url, client_id, state)
    else:
        raise HomeAssistantApiError(f"{url} is onboarded but {state_file} is gone: delete its config folder")
    access = _json(httpx.post(f"{url}/auth/token", timeout=REQUEST_TIMEOUT_S, data={
        "grant_type": "authorization_code", "code": code, "client_id": client_id}))["access_token"]
    api = HomeAssistantApi(url, access)
    redirect = {"client_id": client_id, "redirect_uri": f"{client_id}?auth_callback=1"}
    refused: list[str] = []
    for step in ONBOARDING_STEPS:
        if not steps.get(step):
            try:
                api.post(f"/api/onboarding/{step}", redirect if step == "integration" else {})
            except HomeAssistantApiError as exc:
                # 2024.3's core_config marks itself done, then answers 500 because the integrations it
                # offers (met, radio_browser, google_translate) are not installed: the step is done.
                refused.append(str(exc))
    steps = {s["step"]: s["done"] for s in api.get("/api/onboarding")}
    if not all(steps.values()):
        raise HomeAssistantApiError(f"onboarding of {url} is incomplete: {steps}; {refused}")
    state.token = api.ws_call("auth/long_lived_access_token", client_name=DISPLAY_NAME,
                              lifespan=TOKEN_LIFESPAN_DAYS)
    state.save(state_file)
    return state.token


def _login(url: str, client_id: str, state: ProvisionState) -> str:
    """The login flow the frontend uses, for an onboarded instance whose token was lost."""
    flow = _json(httpx.post(f"{url}/auth/login_flow", timeout=REQUEST_TIMEOUT_S, json={
        "client_id": client_id, "handler": ["homeassistant", None], "redirect_uri": f"{client_id}?auth_callback=1"}))
    done = _json(httpx.post(f"{url}/auth/login_flow/{flow['flow_id']}", timeout=REQUEST_TIMEOUT_S, json={
        "client_id": client_id, "username": state.username, "password": state.password}))
    if done.get("type") != "create_entry":
        raise HomeAssistantApiError(f"login to {url} as {state.username} failed: {done}")
    result: str = done["result"]
    return result


def mqtt_entry(api: HomeAssistantApi) -> dict[str, Any] | None:
    entries: list[dict[str, Any]] = api.get("/api/config/config_entries/entry", {"domain": "mqtt"})
    return entries[0] if entries else None


def remove_onboarding_entries(api: HomeAssistantApi) -> list[str]:
    """Delete the config entries onboarding created by itself; returns their domains."""
    entries: list[dict[str, Any]] = api.get("/api/config/config_entries/entry")
    removed = [e for e in entries if e["domain"] in ONBOARDING_OFFERS]
    for entry in removed:
        api.request("DELETE", f"/api/config/config_entries/entry/{entry['entry_id']}")
    return [e["domain"] for e in removed]


def entry_matches(config_dir: Path, broker: Broker) -> bool:
    """Whether the stored MQTT entry (HA's `.storage/core.config_entries`) points at this broker the same way:
    host, port, account and, for a TLS broker, the same CA. A slot provisioned for a plaintext broker (or
    another CA) is provisioned again: its entry would load and then never connect."""
    path = config_dir / ".storage" / "core.config_entries"
    if not path.exists():
        return False
    entries = json.loads(path.read_text()).get("data", {}).get("entries", [])
    data = next((e.get("data", {}) for e in entries if e.get("domain") == "mqtt"), None)
    if data is None:
        return False
    ca = broker.ca_file.read_text() if broker.ca_file is not None else None
    return bool(data.get("broker") == broker.host and data.get("port") == broker.port
                and data.get("username") == broker.username and data.get("certificate") == ca)


def _upload(api: HomeAssistantApi, path: Path) -> str:
    """A file through HA's `file_upload` API (what the config flow's upload field sends): its id."""
    response = httpx.post(f"{api.url}/api/file_upload", headers=api.headers, timeout=REQUEST_TIMEOUT_S,
                          files={"file": (path.name, path.read_bytes(), "application/x-pem-file")})
    if response.status_code != 200:
        raise HomeAssistantApiError(f"file_upload of {path.name} answered {response.status_code}: {response.text}")
    return str(response.json()["file_id"])


def create_mqtt_entry(api: HomeAssistantApi, broker: Broker) -> dict[str, Any]:
    """The MQTT integration through the config flow (user → broker step), as the UI creates it. A TLS broker
    takes the advanced options, as in the UI: the CA uploaded (`file_upload`) and chosen as the broker
    certificate's verification ("custom"), hostname checked (`tls_insecure` off)."""
    existing = mqtt_entry(api)
    if existing is not None:  # not loaded (wrong broker or password): replace it
        api.request("DELETE", f"/api/config/config_entries/entry/{existing['entry_id']}")
    flow: dict[str, Any] = api.post("/api/config/config_entries/flow",
                                    {"handler": "mqtt", "show_advanced_options": broker.ca_file is not None})
    basic = {"broker": broker.host, "port": broker.port, "username": broker.username, "password": broker.password}
    if flow.get("type") == "form" and flow.get("step_id") == "broker" and broker.ca_file is not None:
        # As in the UI: the advanced options, then "custom" verification (which adds the upload field), then the CA.
        flow = api.post(f"/api/config/config_entries/flow/{flow['flow_id']}", {**basic, "advanced_options": True})
        basic |= {"set_ca_cert": "custom", "tls_insecure": False}
        flow = api.post(f"/api/config/config_entries/flow/{flow['flow_id']}", basic)
        basic |= {"certificate": _upload(api, broker.ca_file)}
    if flow.get("type") == "form" and flow.get("step_id") == "broker":
        flow = api.post(f"/api/config/config_entries/flow/{flow['flow_id']}", basic)
    if flow.get("type") != "create_entry":
        raise HomeAssistantApiError(f"the MQTT config flow did not create an entry: {flow}")
    return flow


def keep_units(api: HomeAssistantApi, units: dict[str, str]) -> list[str]:
    """Pin each sensor's display unit (entity registry option) where HA converted it to the unit system.

    A metric home shows a °F temperature sensor in °C; a home that keeps °F is real, so the tests pin it.
    Returns the entities changed.
    """
    changed = []
    for entity_id, unit in units.items():
        found: dict[str, Any] = api.get(f"/api/states/{entity_id}")
        if found["attributes"].get("unit_of_measurement") != unit:
            api.ws_call("config/entity_registry/update", entity_id=entity_id, options_domain="sensor",
                        options={"unit_of_measurement": unit})
            changed.append(entity_id)
    return changed


def _json(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise HomeAssistantApiError(f"{response.request.method} {response.request.url.path} answered "
                                    f"{response.status_code}: {response.text[:500]}")
    return response.json()
