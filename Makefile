# iis-clientcert: one-command set-up, tests and demo.
#   make test    venv + Pulumi CLI + lint + every pytest suite
#   make demo    venv + Pulumi CLI + `pulumi up` of the dev stack (embedded simulator)
#   eval "$(make -s env)"   put the CLI on PATH and select the local engine environment

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

REPO   := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
VENV   := $(REPO)/.venv
PY     := $(VENV)/bin/python
WORK   := $(REPO)/.work
# Fixed passphrase for the local file:// stacks under .work/state only. It protects nothing
# real (demo and test stacks on this machine); never use it for a stack that holds real secrets.
LOCAL_PASSPHRASE := iis-clientcert-local-only

LINT_PATHS := iis_clientcert iis_clientcert_simulator tests benchmarks scripts stack_config.py $(wildcard __main__.py)
PYTEST_ARGS ?=

# Shell prefix that loads the engine environment (CLI on PATH, PULUMI_HOME, backend, ...).
WITH_ENV = eval "$$($(MAKE) -s --no-print-directory -C $(REPO) env)" &&

.PHONY: test-windows help setup setup-pulumi setup-language-hosts schema env lint test demo demo-down doctor machine bench bench-host reliability

help:
	@echo "make setup        create/refresh .venv (Python 3.11, project editable + [dev])"
	@echo "make setup-pulumi find or build the pinned Pulumi CLI (cached outside the checkout)"
	@echo "make setup-language-hosts  build the YAML and Node.js language hosts (cached), npm deps of examples/typescript"
	@echo "make schema       regenerate schema/iis-clientcert.json (pulumi package get-schema)"
	@echo "make env          print shell exports: eval \"\$$(make -s env)\""
	@echo "make lint         ruff check, ruff format --check, mypy --strict"
	@echo "make test         setup + CLI + lint + all pytest suites"
	@echo "make test-windows the contract suite and one engine test against a real Windows host (IIS_TEST_*)"
	@echo "make demo         setup + CLI + pulumi up of the dev stack"
	@echo "make demo-down    pulumi destroy of the dev stack"
	@echo "make doctor       check the demo's IIS host for the known failures (DOCTOR_ARGS=...)"
	@echo "make machine      show what this machine has and what is missing"
	@echo "make reliability  the fault, secret and concurrency suite"
	@echo "make bench        demo stack and fleet at 0/100/300 ms vs the floor (~5 min)"
	@echo "make bench-host   host-access benchmark"

setup:
	@scripts/setup.sh

setup-pulumi:
	@scripts/ensure-pulumi.sh >/dev/null

# Only for programs in other languages (README, "Use from other languages"); the engine
# tests that need them build them themselves.
setup-language-hosts:
	@scripts/ensure-language-hosts.sh >/dev/null

# The component package's schema as `pulumi package get-schema` prints it (published in
# schema/; tests/unit/test_component_package.py fails when it is stale).
schema: setup setup-pulumi
	@$(WITH_ENV) cd "$(REPO)" && tmp="$$(mktemp)" && \
		{ pulumi package get-schema ./plugin/pulumi-resource-iis-clientcert >"$$tmp" || { rm -f "$$tmp"; exit 1; }; } && \
		chmod 644 "$$tmp" && mv "$$tmp" schema/iis-clientcert.json
	@echo "[schema] schema/iis-clientcert.json"

# Prints exports only (stdout); nothing here overrides a user's own login unless evaluated.
env:
	@mkdir -p "$(WORK)/pulumi-home" "$(WORK)/state"
	@bindir="$$(scripts/ensure-pulumi.sh --print-dir)"; \
	echo "export PATH=\"$$bindir:\$$PATH\""; \
	hostsdir="$$(scripts/ensure-language-hosts.sh --print-dir)"; \
	if [ -d "$$hostsdir" ]; then echo "# YAML and Node.js language hosts (make setup-language-hosts)"; \
		echo "export PATH=\"$$hostsdir:\$$PATH\""; fi; \
	echo "export PULUMI_HOME=\"$(WORK)/pulumi-home\""; \
	echo "export PULUMI_BACKEND_URL=\"file://$(WORK)/state\""; \
	echo "# fixed local-only passphrase for the file:// stacks in .work/state (not a secret)"; \
	echo "export PULUMI_CONFIG_PASSPHRASE=\"$(LOCAL_PASSPHRASE)\""; \
	echo "export PULUMI_SKIP_UPDATE_CHECK=true"; \
	echo "export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true"; \
	echo "# the project's interpreter (the fallback language host ignores runtime.options.virtualenv)"; \
	echo "export PULUMI_PYTHON_CMD=\"$(VENV)/bin/python\""

lint: setup
	@echo "[lint] ruff check"
	@$(VENV)/bin/ruff check .
	@echo "[lint] ruff format --check"
	@$(VENV)/bin/ruff format --check .
	@echo "[lint] mypy --strict $(LINT_PATHS)"
	@$(VENV)/bin/mypy $(LINT_PATHS)

test: setup setup-pulumi lint
	@echo "[test] pytest (all suites)"
	@$(WITH_ENV) cd "$(REPO)" && rc=0 && "$(PY)" -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "[test] ERROR: pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc

# Against a real Windows Server with IIS (docs/real-host.md): IIS_TEST_ENDPOINT,
# IIS_TEST_USERNAME, IIS_TEST_PASSWORD, IIS_TEST_TRANSPORT, IIS_TEST_CA_BUNDLE (optional
# IIS_TEST_SITE, IIS_TEST_SHELL=pwsh). Runs only the Windows targets; a skip is reported.
test-windows: setup setup-pulumi
	@if [ -z "$${IIS_TEST_ENDPOINT:-}" ]; then \
		echo "[test-windows] set IIS_TEST_ENDPOINT (and IIS_TEST_USERNAME, IIS_TEST_PASSWORD, ...): see docs/real-host.md" >&2; \
		exit 2; \
	fi
	@$(WITH_ENV) cd "$(REPO)" && "$(PY)" -m pytest -rs -k windows tests/contract tests/engine/test_windows_host.py $(PYTEST_ARGS)

demo: setup setup-pulumi
	@$(WITH_ENV) scripts/demo.sh

demo-down: setup setup-pulumi
	@$(WITH_ENV) cd "$(REPO)" && "$(PY)" scripts/demo.py down

reliability: setup setup-pulumi
	@$(WITH_ENV) cd "$(REPO)" && "$(PY)" -m pytest -m reliability $(PYTEST_ARGS) && \
		"$(PY)" -m benchmarks.reliability_report

# The demo stack (up/preview/refresh/destroy at 0, 100 and 300 ms) and a fleet, each
# against the floor (benchmarks/stack.py); BENCH_ARGS="--runs 3" for medians of 3.
bench: setup setup-pulumi
	@$(WITH_ENV) cd "$(REPO)" && "$(PY)" -m benchmarks.stack $(BENCH_ARGS)

bench-host: setup
	@cd "$(REPO)" && "$(PY)" -m benchmarks.host

# The IIS doctor; against a real host: DOCTOR_ARGS="--endpoint https://web01:5986/wsman ..."
doctor: setup
	@cd "$(REPO)" && "$(PY)" -m iis_clientcert.tools.doctor $(if $(DOCTOR_ARGS),$(DOCTOR_ARGS),--simulator $(WORK)/sim)

machine:
	@echo "repo:        $(REPO)"
	@printf 'python3.11:  '; (command -v python3.11 >/dev/null && python3.11 --version) || echo "MISSING (needed)"
	@printf '.venv:       '; ([ -x "$(PY)" ] && "$(PY)" --version) || echo "not created yet (make setup)"
	@printf 'go:          '; (command -v go >/dev/null && go env GOVERSION) || echo "missing (needed only when no pulumi >= v3.274.1 is on PATH)"
	@bindir="$$(scripts/ensure-pulumi.sh --print-dir 2>/dev/null)"; \
	printf 'pulumi dir:  %s\n' "$$bindir"; \
	printf 'pulumi:      '; ([ -x "$$bindir/pulumi" ] && "$$bindir/pulumi" version) || echo "not built yet (make setup-pulumi)"; \
	for f in pulumi-language-python pulumi-language-python-exec pulumi-resource-pulumi-python; do \
		printf '%-27s %s\n' "$$f:" "$$([ -x "$$bindir/$$f" ] && echo present || { command -v $$f >/dev/null 2>&1 && echo "on PATH" || echo MISSING; })"; \
	done
	@hostsdir="$$(scripts/ensure-language-hosts.sh --print-dir)"; \
	for f in pulumi-language-yaml pulumi-language-nodejs; do \
		printf '%-27s %s\n' "$$f:" "$$([ -x "$$hostsdir/$$f" ] && echo present || echo "not built (make setup-language-hosts; only for YAML/TypeScript programs)")"; \
	done
	@printf 'state:       %s\n' "$(WORK)/state"
