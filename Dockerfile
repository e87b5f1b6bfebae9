# One image for the ingest worker, the hats_assets code location (and the runs K8sRunLauncher starts
# from it) and the migrations, built from uv.lock. The chart (deploy/hats) chooses the command.
#   docker build -t hats:0.1.0 .
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
