# The two commands of the README: `make dev` and `make test`. Both start from a bare Python 3.11.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: dev test lint bench screenshots clean

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; fi; \
	  $(PYTHON) -m venv $(VENV); }
	@$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	@touch $@

$(VENV)/.devtools: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	@touch $@ $(VENV)/.runtime

dev: $(VENV)/.runtime
	$(BIN)/invoke dev

test: $(VENV)/.devtools
	@sh tools/system-deps.sh
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(VENV)/.devtools
	$(BIN)/ruff check .
	$(BIN)/vermin -q --no-tips -t=3.8- --violations remote/host/

bench: $(VENV)/.devtools
	$(BIN)/pip install -q -r requirements-bench.txt
	$(BIN)/python bench/dashboard_start.py
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/guard.py
	$(BIN)/python bench/deploy.py
	$(BIN)/python bench/failover.py
	$(BIN)/python bench/fleet.py
	$(BIN)/python bench/fencing.py
	$(BIN)/python bench/data.py
	$(BIN)/python bench/lease.py

screenshots: $(VENV)/.devtools
	@sh tools/system-deps.sh
	$(BIN)/python tools/screenshots.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
