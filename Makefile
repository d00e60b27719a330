# Everything a fresh machine with only Python 3.11+ needs: `make run`, `make test`.
SHELL := /bin/bash
PYTHON ?= python3
TOOLS := .tools
UV := $(TOOLS)/bin/uv
UV_VERSION := 0.13.9

.PHONY: install run test bench lint deploy-check format proto clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

install: $(UV)
	$(UV) sync --all-packages --all-extras --locked --python $(PYTHON)

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

lint: install deploy-check
	$(UV) run --no-sync ruff check .
	$(UV) run --no-sync ruff format --check .
	$(UV) run --no-sync mypy
	$(BUF) lint proto
	$(BUF) breaking proto --against '.git#branch=main,subdir=proto'

# The deployment files, offline (tests/deploy): hadolint on the Dockerfiles,
# docker-compose.yml against the Compose specification's JSON schema and dclint, the
# kustomize overlays rendered (kubectl kustomize) and checked against the Kubernetes
# schemas (kubernetes-validate). The Python tools are dev dependencies; dclint, which
# carries the Compose schema, comes from npm, pinned by deploy/tools/package-lock.json.
# Once installed, nothing here needs the network.
DEPLOY_TOOLS := deploy/tools/node_modules/.package-lock.json

$(DEPLOY_TOOLS): deploy/tools/package.json deploy/tools/package-lock.json
	npm ci --prefix deploy/tools --no-audit --no-fund --ignore-scripts

deploy-check: install $(DEPLOY_TOOLS)
	DEPLOY_CHECK_STRICT=1 $(UV) run --no-sync pytest tests/deploy -q


proto: install
	$(UV) run --no-sync python scripts/gen_proto.py

format: install
	$(UV) run --no-sync ruff format .
	$(UV) run --no-sync ruff check --fix .

clean:
	rm -rf .venv $(TOOLS) .data
