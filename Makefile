# Everything a fresh machine with only Python 3.11+ needs: `make run`, `make test`.
SHELL := /bin/bash
PYTHON ?= python3
TOOLS := .tools
UV := $(TOOLS)/bin/uv
UV_VERSION := 0.13.9

.PHONY: install run test bench lint format proto clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

install: $(UV)
	$(UV) sync --all-packages --locked --python $(PYTHON)

run: install
	LOYALTY_ENV=dev $(UV) run --no-sync loyalty-stack

test: install
	$(UV) run --no-sync pytest

bench: install
	$(UV) run --no-sync python bench/run.py
	$(UV) run --no-sync python bench/backbone.py
	$(UV) run --no-sync python bench/rules.py
	$(UV) run --no-sync python bench/notifier.py

BUF := npx --yes @bufbuild/buf@1.75.0

lint: install
	$(UV) run --no-sync ruff check .
	$(UV) run --no-sync ruff format --check .
	$(UV) run --no-sync mypy
	$(BUF) lint proto
	$(BUF) breaking proto --against '.git#branch=main,subdir=proto'


proto: install
	$(UV) run --no-sync python scripts/gen_proto.py

format: install
	$(UV) run --no-sync ruff format .
	$(UV) run --no-sync ruff check --fix .

clean:
	rm -rf .venv $(TOOLS) .data
