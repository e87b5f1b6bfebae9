"""Reload the code location through the Dagster webserver, so partitions resolved at load time move.

``hats_assets.partitions`` resolves the first day with data when the code location loads; an import
reaching further back only gets its partitions once the location is loaded again. The webserver's
GraphQL mutation ``reloadRepositoryLocation`` restarts the location's code server (the UI's Deployment →
Reload does the same) and answers once it has loaded again. Checked under ``dagster dev`` (what ``hats run``
starts): the webserver and the daemon read one generated workspace file pointing at the same proxy code
server socket, and the reload replaced the proxy's gRPC child process (7.5 s on the 2-core test machine),
so the daemon's sensors and schedules see the new partitions too.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

URL_ENV = "HATS_DAGSTER_URL"
PORT_ENV = "HATS_DAGSTER_PORT"
LOCATION_NAME = "hats_assets"  # workspace.yaml's location_name
RELOAD_TIMEOUT_S = 180.0
RELOAD_MUTATION = """
mutation Reload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry {
      locationOrLoadError { __typename ... on PythonError { message } }
    }
    ... on ReloadNotSupported { message }
    ... on RepositoryLocationNotFound { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
  }
}
"""


class ReloadError(RuntimeError):
    """The code location could not be reloaded; the message says how to do it by hand."""


def webserver_url(environ: Mapping[str, str]) -> str:
    """``HATS_DAGSTER_URL``, else the stack's webserver on loopback at ``HATS_DAGSTER_PORT``."""
    if environ.get(URL_ENV):
        return environ[URL_ENV].rstrip("/")
    if environ.get(PORT_ENV):
        return f"http://127.0.0.1:{environ[PORT_ENV]}"
    raise ReloadError(f"neither {URL_ENV} nor {PORT_ENV} is set: cannot ask the Dagster webserver to reload the "
                      f"code location; reload {LOCATION_NAME!r} in the UI (Deployment → Reload)")


def reload_code_location(url: str, location: str = LOCATION_NAME) -> None:
    """Ask the webserver at ``url`` to reload ``location``; returns once it has loaded again."""
    manual = f"reload {location!r} in the UI (Deployment → Reload)"
    try:
        response = httpx.post(f"{url}/graphql", json={"query": RELOAD_MUTATION, "variables": {"name": location}},
                              timeout=RELOAD_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise ReloadError(f"the Dagster webserver at {url} ({URL_ENV}/{PORT_ENV}) did not answer: {exc}; "
                          f"{manual}") from exc
    if response.status_code != 200:
        raise ReloadError(f"the Dagster webserver at {url} answered {response.status_code}: {response.text[:300]}; "
                          f"{manual}")
    result = (response.json().get("data") or {}).get("reloadRepositoryLocation") or {}
    loaded = (result.get("locationOrLoadError") or {})
    if result.get("__typename") != "WorkspaceLocationEntry" or loaded.get("__typename") != "RepositoryLocation":
        reason = result.get("message") or loaded.get("message") or response.text[:300]
        raise ReloadError(f"reloading {location!r} failed: {reason}; {manual}")
