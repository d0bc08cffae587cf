# The two commands of the README. Both create .venv and install on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## make run: Temporal dev server + Web UI (:8233), worker, link handler (:8000),
## mail catcher (:1025 -> .data/mail), demo data. Ctrl-C stops everything.
run: $(STAMP)
	$(BIN)/python devstack.py

## make test: the whole suite (unit, time-skipping, dev server, browser).
test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf .data test-artifacts
