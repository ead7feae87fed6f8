# Warren — thin wrappers over uv, honcho and docker compose. `make` (or `make help`) lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

CONSUMERS ?= 1
# Local runs export no traces unless asked: `make dev OTEL_TRACES_EXPORTER=otlp` sends them to
# a Jaeger or collector on localhost:4318.
OTEL_TRACES_EXPORTER ?= none
export OTEL_TRACES_EXPORTER
export OTEL_METRICS_EXPORTER ?= none
export OTEL_LOGS_EXPORTER ?= none
export OTEL_EXPORTER_OTLP_PROTOCOL ?= http/protobuf

include deploy/compose.mk

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-13s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: install
install: ## install the locked dependencies into .venv (uv sync --frozen)
	uv sync --frozen

.PHONY: dev
dev: install ## run gateway, producer and CONSUMERS=N consumers as local processes (Ctrl+C stops)
	@# The settings' defaults are .env's; no env file, so WARREN_* from the shell always win.
	uv run honcho start -e /dev/null -f Procfile -c consumer=$(CONSUMERS)

.PHONY: test
test: install ## run every test tier against the local RabbitMQ (unit, integration, system, browser, faults)
	uv run pytest

.PHONY: test-fast
test-fast: install ## unit tests only (no broker needed)
	uv run pytest tests/unit

.PHONY: test-faults
test-faults: install ## the fault suite only (starts its own RabbitMQ node)
	uv run pytest -m faults

.PHONY: lint
lint: install ## ruff, mypy --strict and the static deploy checks
	uv run ruff check .
	uv run ruff format --check .
	uv run mypy
	.ci/static-checks

.PHONY: fmt
fmt: install ## format and autofix
	uv run ruff format .
	uv run ruff check --fix .

.PHONY: bench
bench: install ## benchmarks beside raw aio-pika/pika baselines (bench/results/); ARGS=--quick for a smoke run
	uv run python -m bench $(ARGS)

.PHONY: clean
clean: ## remove caches, virtualenv and test artefacts
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache tests/browser/screenshots/*.png
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
