"""A real Home Assistant from PyPI, one venv per version, cached outside the clone (never the project venv).

`hass --skip-pip` installs nothing itself, so this installs what the release pins
(`homeassistant==<v>` constrained by the wheel's own `package_constraints.txt`, as HA's installer does)
plus the manifest `requirements` of exactly the integrations the generated config loads, their
dependencies included. The interpreter is the oldest Python the wheel's `Requires-Python` accepts. A
marker written last makes a cached venv a no-op and an interrupted one redone from scratch; a file lock
keeps two test sessions from building the same venv at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import SpecifierSet

from devstack.stack_settings import value

Progress = Callable[[str], None]

HA_HOME = Path(value("HATS_HA_HOME"))
PYTHON_SETTING = "HATS_HA_PYTHON"
MARKER = ".hats-installed.json"
CANDIDATE_MINORS = range(11, 16)
# Pins a release needs beyond its own constraints: hass-nabucasa 0.78's acme breaks on josepy 2 (every
# HTTP request then answers 500).
EXTRA_CONSTRAINTS: dict[str, tuple[str, ...]] = {"2024.3.3": ("josepy<2",)}
PIP_FLAGS = ("--disable-pip-version-check", "--no-input", "--quiet")
# HA's own bootstrap sets these up whatever configuration.yaml says (printed by the HA interpreter).
_BOOTSTRAP_DOMAINS = (
    "import json, homeassistant, homeassistant.bootstrap as b, os;"
    "print(json.dumps({'package': os.path.dirname(homeassistant.__file__),"
    " 'domains': sorted(b.CORE_INTEGRATIONS | b.DEFAULT_INTEGRATIONS)}))"
)
_PROBE = "import sys, venv, ensurepip; print('%d.%d.%d' % sys.version_info[:3])"


class InstallError(RuntimeError):
    """Home Assistant could not be installed; the message says what to install or set."""


@dataclass(frozen=True)
class Installation:
    version: str
    venv: Path
    python: str

    @property
    def hass(self) -> Path:
        return self.venv / "bin" / "hass"


def venv_dir(version: str) -> Path:
    return HA_HOME / f"homeassistant-{version}"


def installed(version: str, domains: Iterable[str]) -> Installation | None:
    """The cached venv, if it finished installing for (at least) these integrations."""
    marker = venv_dir(version) / MARKER
    if not marker.exists():
        return None
    done = json.loads(marker.read_text())
    if not set(domains) <= set(done["domains"]):
        return None
    return Installation(version, venv_dir(version), done["python"])


def ensure(version: str, domains: Iterable[str], progress: Progress) -> Installation:
    """Install Home Assistant `version` able to load `domains` (a no-op when cached)."""
    wanted = sorted(set(domains))
    if (found := installed(version, wanted)) is not None:
        return found
    try:
        HA_HOME.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise InstallError(f"cannot create {HA_HOME}: run as root or set HATS_HA_HOME to a writable folder") from None
    with _locked(HA_HOME / f"homeassistant-{version}.lock", progress):
        if (found := installed(version, wanted)) is not None:
            return found  # another session finished it while we waited
        started = time.monotonic()
        found = _install(version, wanted, progress)
        progress(f"Home Assistant {version} installed in {time.monotonic() - started:.0f} s ({found.venv})")
        return found


def _install(version: str, domains: list[str], progress: Progress) -> Installation:
    venv = venv_dir(version)
    wheel = _download_wheel(version, progress)
    with zipfile.ZipFile(wheel) as archive:
        constraints_text = archive.read("homeassistant/package_constraints.txt").decode()
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = re.search(r"^Requires-Python: (.+)$", archive.read(metadata).decode(), re.MULTILINE)
    python, python_version = find_python(version, SpecifierSet(requires.group(1) if requires else ""))
    if venv.exists():
        progress(f"removing the unfinished install in {venv}")
        shutil.rmtree(venv)
    progress(f"creating {venv} with Python {python_version} ({python})")
    subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True)
    constraints = venv / "package_constraints.txt"
    constraints.write_text("\n".join([constraints_text, *EXTRA_CONSTRAINTS.get(version, ())]) + "\n")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", *PIP_FLAGS, "--constraint", str(constraints)]
    progress(f"pip install homeassistant=={version} (constrained by its package_constraints.txt)")
    _run([*pip, str(wheel)])
    found = json.loads(_run([str(venv / "bin" / "python"), "-c", _BOOTSTRAP_DOMAINS]))
    loaded = sorted(set(domains) | set(found["domains"]))
    requirements = integration_requirements(Path(found["package"]) / "components", loaded)
    progress(f"pip install {len(requirements)} requirements of {len(loaded)} integrations")
    if requirements:
        _run([*pip, *requirements])
    partial = venv / f"{MARKER}.partial"
    partial.write_text(json.dumps({"version": version, "python": python, "domains": domains,
                                   "loaded": loaded, "requirements": requirements}, indent=2))
    partial.replace(venv / MARKER)
    return Installation(version, venv, python)


def integration_requirements(components: Path, domains: Iterable[str]) -> list[str]:
    """The manifest `requirements` of `domains` and every integration they depend on."""
    seen: set[str] = set()
    requirements: set[str] = set()
    pending = list(domains)
    while pending:
        domain = pending.pop()
        if domain in seen:
            continue
        seen.add(domain)
        manifest_path = components / domain / "manifest.json"
        if not manifest_path.exists():
            raise InstallError(f"Home Assistant has no integration {domain!r} ({manifest_path} is missing)")
        manifest = json.loads(manifest_path.read_text())
        requirements.update(manifest.get("requirements", []))
        pending.extend(manifest.get("dependencies", []))
    return sorted(requirements)


def find_python(version: str, requires: SpecifierSet) -> tuple[str, str]:
    """The oldest interpreter (with venv) that Home Assistant `version` accepts: $HATS_HA_PYTHON first."""
    tried: list[str] = []
    best: tuple[tuple[int, ...], str, str] | None = None
    for candidate in _candidates():
        tried.append(candidate)
        try:
            probe = subprocess.run([candidate, "-c", _PROBE], capture_output=True, text=True, check=False)
        except OSError:
            continue
        if probe.returncode != 0:
            continue
        found = probe.stdout.strip()
        if found not in requires:
            continue
        key = tuple(int(part) for part in found.split("."))
        if value(PYTHON_SETTING):
            return candidate, found  # an explicit choice that fits wins over discovery
        if best is None or key[:2] < best[0][:2]:
            best = (key, candidate, found)
    if best is None:
        raise InstallError(
            f"Home Assistant {version} needs Python {requires} with the venv module, and none was found "
            f"(tried: {', '.join(tried) or 'nothing'}). Install one (e.g. Debian's python3.X and python3.X-venv, "
            f"or `pyenv install 3.13`) or set {PYTHON_SETTING} to its path (several: separated by ':')."
        )
    return best[1], best[2]


def _candidates() -> Iterator[str]:
    explicit = value(PYTHON_SETTING)
    if explicit:
        yield from explicit.split(os.pathsep)
        return
    seen: set[str] = set()
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    folders = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p and "shims" not in p]
    folders += [Path("/usr/bin"), Path("/usr/local/bin"), *sorted((pyenv_root / "versions").glob("*/bin"))]
    for folder in folders:
        for minor in CANDIDATE_MINORS:
            path = folder / f"python3.{minor}"
            real = str(path.resolve()) if path.exists() else ""
            if real and real not in seen and os.access(path, os.X_OK):
                seen.add(real)
                yield str(path)


def _download_wheel(version: str, progress: Progress) -> Path:
    """The release's wheel, fetched with pip (its config and mirrors) before an interpreter is chosen."""
    wheels = HA_HOME / "wheels"
    name = f"homeassistant-{version}-py3-none-any.whl"
    if (wheels / name).exists():
        return wheels / name
    tools = HA_HOME / "pip-tools"
    if not (tools / "bin" / "pip").exists():
        progress(f"creating a pip for downloads in {tools}")
        subprocess.run([_base_python(), "-m", "venv", "--clear", str(tools)], check=True, capture_output=True)
    progress(f"downloading the homeassistant {version} wheel")
    partial = wheels / "partial"
    shutil.rmtree(partial, ignore_errors=True)
    _run([str(tools / "bin" / "pip"), "download", *PIP_FLAGS, "--no-deps", "--ignore-requires-python",
          "--only-binary=:all:", "-d", str(partial), f"homeassistant=={version}"])
    (partial / name).replace(wheels / name)
    shutil.rmtree(partial)
    return wheels / name


def _base_python() -> str:
    """The interpreter behind the project venv (a uv venv has no pip, but its base has venv + ensurepip)."""
    return str(getattr(sys, "_base_executable", sys.executable))


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise InstallError(f"`{' '.join(argv[:6])} …` failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


@contextmanager
def _locked(path: Path, progress: Progress) -> Iterator[None]:
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another session installing into {path.with_suffix('')}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
