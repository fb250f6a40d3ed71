# `make demo` and `make test` each set up everything they need on a fresh machine:
# a .venv with cnnlab and its dependencies, and the Debian packages the tests read.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cnnlab-installed
# torch comes from this machine type's local wheel cache; elsewhere pip fetches it.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# Debian packages the test suite reads: the full Fashion-MNIST as IDX files, Chromium for the
# tests that render reports and pages in a real browser, PostgreSQL and openssl for the service's
# database and TLS tests.
APT_PACKAGES := dataset-fashion-mnist chromium postgresql openssl
APT_STAMPS := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz /usr/bin/chromium \
	/usr/lib/postgresql/*/bin/initdb /usr/bin/openssl

.PHONY: demo test lint bench system-deps clean

demo: $(STAMP)
	$(VENV)/bin/cnnlab demo --out runs/demo --overwrite

test: $(STAMP) system-deps
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# ruff, then the layer contract (pyproject.toml's [tool.importlinter]; docs/ARCHITECTURE.md).
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/lint-imports

bench: $(STAMP) system-deps
	$(PY) bench/train_throughput.py

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

# Installs the Debian packages only when they are missing (needs root, as on CI).
system-deps:
	@if ! ls $(APT_STAMPS) >/dev/null 2>&1; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
