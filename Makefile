# Two commands do all set-up: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Label Studio for the integration tests, in its own environment (it pins its own Django, numpy, SDK...)
LS_VENV := .venv-labelstudio
LS_VERSION := 1.23.2
LS_STAMP := $(LS_VENV)/.installed
DEMO_OUT ?= runs/demo

.PHONY: demo test lint typecheck clean labelstudio chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# sentry-sdk 3 (December 2026) drops an option that label-studio 1.23.2 passes (`send_default_pii`), and
# label-studio asks only for sentry-sdk>=2.16.0: with 3.x, `label-studio start` exits at once
LS_PINS := 'label-studio==$(LS_VERSION)' 'sentry-sdk>=2.16.0,<3'

$(LS_STAMP):
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q $(LS_PINS)
	echo $(LS_PINS) > $(LS_STAMP)

labelstudio: $(LS_STAMP)

# Debian's Chromium for the report's browser test, installed when missing (root or passwordless sudo)
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the report's browser test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; } || \
	  { echo "could not install chromium: install Debian's chromium package (apt-get install chromium)"; exit 1; }

demo: $(STAMP)
	$(BIN)/mgral run --preset demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) $(LS_STAMP) chromium lint typecheck
	$(BIN)/pytest

clean:
	rm -rf $(VENV) $(LS_VENV) runs .pytest_cache .mypy_cache .ruff_cache
