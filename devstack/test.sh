#!/usr/bin/env bash
# `make test`: static checks, then the whole pytest suite against the test stack (its own ports, state
# and secrets, so a running demo is never touched), which is stopped again afterwards.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=.venv/bin
started=$(date +%s)

echo "==> ruff"
$VENV/ruff check . || exit 1
echo "==> mypy"
$VENV/mypy || exit 1
echo "==> promtool: the alert rules, their unit tests, the stack's Prometheus config"
promtool check rules deploy/hats/prometheus/alerts.yml || exit 1
promtool test rules tests/prometheus/alerts_test.yml || exit 1
$VENV/python -m devstack.prometheus check-config test || exit 1
echo "==> test stack"
$VENV/hats --profile test up || exit 1
echo "==> pytest"
$VENV/pytest "$@"
rc=$?
echo "==> stopping the test stack"
$VENV/hats --profile test down
echo "make test: exit $rc after $(( $(date +%s) - started )) s"
exit $rc
