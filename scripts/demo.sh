#!/usr/bin/env bash
# The main job on the embedded default (see scripts/demo.py): demo PKI, the IIS simulator,
# `pulumi up` of the dev stack and a client-certificate probe of the site.
# Run it through `make demo` (venv, CLI and the local engine environment), or after
# `eval "$(make -s env)"`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() {
	printf '[demo] %s\n' "$*" >&2
	exit 1
}

command -v pulumi >/dev/null 2>&1 || die 'no pulumi on PATH: run `make demo` or eval "$(make -s env)" first'
[ -n "${PULUMI_BACKEND_URL:-}" ] || die 'the local engine environment is not set: run `make demo` or eval "$(make -s env)" first'
exec .venv/bin/python scripts/demo.py "$@"
