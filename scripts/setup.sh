#!/usr/bin/env bash
# Create or refresh the project's virtualenv (.venv, Python 3.11) with the project installed
# editable with its [dev] extras. Idempotent: pip runs only when pyproject.toml changed since
# the last successful install (a stamp holds its hash) or the venv is missing/broken.
#
# Environment:
#   PYTHON       interpreter to create the venv with (default: python3.11)
#   SETUP_FORCE=1  reinstall even when the stamp matches
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
STAMP="$VENV/.iis-clientcert-setup-stamp"
PYTHON="${PYTHON:-python3.11}"

log() { printf '[setup] %s\n' "$*" >&2; }
die() {
	printf '[setup] ERROR: %s\n' "$*" >&2
	exit 1
}

command -v "$PYTHON" >/dev/null 2>&1 ||
	die "$PYTHON not found: this project needs Python 3.11 (install python3.11 and python3.11-venv, or set PYTHON=/path/to/python3.11)"
pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ "$pyver" = "3.11" ] || die "$PYTHON is Python $pyver; this project needs Python 3.11 (set PYTHON=...)"

want="$(sha256sum "$REPO/pyproject.toml" | cut -d" " -f1) py$pyver"

if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
	log "existing .venv is not a working Python 3.11 venv: recreating it"
	rm -rf "$VENV"
fi

if [ ! -x "$VENV/bin/python" ]; then
	log "creating .venv with $PYTHON ($pyver)"
	"$PYTHON" -m venv "$VENV" || die "could not create the venv (on Debian/Ubuntu install python3.11-venv)"
fi

if [ "${SETUP_FORCE:-}" != "1" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] &&
	"$VENV/bin/python" -c 'import pulumi, iis_clientcert, iis_clientcert_simulator, pytest' 2>/dev/null; then
	log ".venv is up to date (pyproject.toml unchanged): skipping pip"
	exit 0
fi

PIP_LOG="$VENV/pip-install.log"
log "installing the project (editable) with [dev] extras into .venv (pip output: $PIP_LOG)"
if ! { "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
	"$VENV/bin/python" -m pip install --disable-pip-version-check -e "$REPO[dev]"; } >"$PIP_LOG" 2>&1; then
	tail -n 40 "$PIP_LOG" >&2
	die "pip install failed (last lines above; full output in $PIP_LOG)"
fi
printf '%s\n' "$want" >"$STAMP"
log "done: pulumi SDK $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("pulumi"))')"
