# The commands of the README. Each creates .venv and installs the project on first use.
# Python: python3.11 where present, else any python3 >= 3.11 (checked below).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test migrate test-deps lint install clean

$(BIN)/python:
	@if [ -z "$(PYTHON)" ]; then \
		echo "Python 3.11 or newer is required: no python3.11 or python3 on PATH" >&2; exit 1; \
	fi
	@"$(PYTHON)" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "Python 3.11 or newer is required: $(PYTHON) is $$("$(PYTHON)" --version 2>&1)." \
		     "Install python3.11, or run make PYTHON=/path/to/python3.11 ..." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## make run: migrate the database, then Temporal dev server + Web UI (:8233), worker,
## link handler (:8000), admin console (:8100), mail catcher (:1025 -> .data/mail), demo
## data. Ctrl-C stops it.
run: $(STAMP)
	$(BIN)/python devstack.py

## make migrate: bring INVITES_DATABASE_URL's database to the latest schema.
migrate: $(STAMP)
	$(BIN)/alembic -c alembic.ini upgrade head

## What the suite needs from Debian, installed when missing: chromium (browser tests) and
## postgresql (every database test runs on it too). apt-get, through sudo when not root.
test-deps:
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
		if ! command -v apt-get >/dev/null 2>&1; then \
			echo "make test needs:$$missing; without apt-get here, install them yourself" >&2; \
			exit 1; \
		fi; \
		sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
		echo "make test: installing$$missing (apt-get)"; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing || exit 1; \
	fi

# Test processes (pytest-xdist): most tests wait on servers, so two share 2 CPUs well. Each
# process has its own dev server, time-skipping server and PostgreSQL cluster.
TEST_PROCESSES ?= 2

## make test: `make lint` first (ruff; mypy, strict on workflows/activities/records/messages/rules/content), then
## the whole suite (unit, time-skipping, dev server, browser), each database test on
## SQLite and PostgreSQL; PostgreSQL missing is an error here, not a skip.
test: $(STAMP) test-deps lint
	INVITES_TEST_REQUIRE_POSTGRES=1 $(BIN)/pytest -n $(TEST_PROCESSES)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy workflows activities records messages rules demo content admin webhooks domains linkhandler invitations

clean:
	rm -rf .data test-artifacts
