# hats: the two commands are `make run` (set up everything and start the demo) and `make test`.
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: run test bootstrap up down status lint typecheck unit purge docs dashboards

run: bootstrap ## install what is missing, start stack + worker + simulator + Dagster UI, first rollups
	@$(VENV)/hats run

test: bootstrap ## the whole suite: ruff, mypy, pytest against a separate test stack
	@bash devstack/test.sh

bootstrap: ## Debian packages, uv, the venv from uv.lock, PostgreSQL binaries (idempotent)
	@bash devstack/bootstrap.sh

up: bootstrap ## the dev stack only (Mosquitto, InfluxDB, PostgreSQL), migrated; settings in .hats/env
	@$(VENV)/hats up

down: ## stop everything `make run`/`make up`/`make test` started
	@if [ -x $(VENV)/hats ]; then $(VENV)/hats down; $(VENV)/hats --profile test down; fi

status:
	@$(VENV)/hats status

lint:
	@$(VENV)/ruff check .

typecheck:
	@$(VENV)/mypy

unit: ## the tests that need no services
	@$(VENV)/pytest -m "not integration"

docs: ## write README.md's tables (assets, checks, jobs, schedules, sensors, metrics, settings) from the code
	@$(VENV)/hats docs

dashboards: ## write deploy/grafana/dashboards/*.json from deploy/grafana/build.py
	@$(VENV)/python deploy/grafana/build.py

purge: ## stop everything and delete all stack data and secrets (dev and test)
	@if [ -x $(VENV)/hats ]; then $(VENV)/hats purge; $(VENV)/hats --profile test purge; fi
