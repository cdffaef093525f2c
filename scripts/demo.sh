#!/usr/bin/env bash
# PLACEHOLDER demo (issue 2): `pulumi up --yes -s dev` on the project at the repo root, in
# the local engine environment. A later issue replaces this with the real demo.
# Run it through `make demo` (which sets up the venv, the CLI and the environment), or after
# `eval "$(make -s env)"`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() {
	printf '[demo] %s\n' "$*" >&2
	exit 1
}

command -v pulumi >/dev/null 2>&1 || die 'no pulumi on PATH: run `make demo` or eval "$(make -s env)" first'
[ -n "${PULUMI_BACKEND_URL:-}" ] || die 'the local engine environment is not set: run `make demo` or eval "$(make -s env)" first'
[ -f Pulumi.yaml ] && [ -f __main__.py ] || die "not yet: no Pulumi.yaml/__main__.py at the repo root (a later issue adds the program)"
command -v pulumi-language-python >/dev/null 2>&1 ||
	die "BLOCKED: the Python language host (pulumi-language-python) is not installed, so the CLI cannot start a python program; run `make setup-pulumi` and see its output"

pulumi stack select dev >/dev/null 2>&1 || pulumi stack init dev
pulumi up --yes -s dev
