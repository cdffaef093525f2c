#!/usr/bin/env bash
# Make the pinned Pulumi CLI available and print the folder that holds it (last line of
# stdout). Progress and errors go to stderr.
#
#   scripts/ensure-pulumi.sh              find or build the CLI, print its folder
#   scripts/ensure-pulumi.sh --print-dir  print the folder the CLI is (or would be) in; never builds
#
# Order of preference:
#   1. a `pulumi` already on PATH whose version is >= the pinned one (the user's own);
#   2. the cached build in ${IIS_CLIENTCERT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iis-clientcert}/pulumi-<version>/bin;
#   3. a fresh build from Go modules into that cache (needs Go >= 1.26.6; a few minutes).
#
# Environment:
#   IIS_CLIENTCERT_CACHE              cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/iis-clientcert)
#   IIS_CLIENTCERT_IGNORE_PATH_PULUMI=1  ignore a pulumi on PATH, always use the pinned build
#   IIS_CLIENTCERT_PY_LANGHOST_VERSION   pseudo-version (v3.0.0-<UTC time>-<hash12>) of
#       github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3 to build the Python
#       language host from; see the note at PY_LANGHOST_VERSION below.
set -euo pipefail

PINNED=v3.274.1
MIN_GO=1.26.6
CLI_PKG=github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
SDK_MOD=github.com/pulumi/pulumi/sdk/v3
LANGHOST_MOD=github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3
VERSION_VAR=github.com/pulumi/pulumi/sdk/v3/go/common/version.Version

# The Python language host (pulumi-language-python).
# Since v3.69 it is its own Go module without tags, reachable only through the pseudo-version
# of a release commit: for v3.274.1 (commit dated 2026-11-05T12:45:06Z, the Time of
# sdk/v3@v3.274.1) that is v3.0.0-20261105124506-<first 12 hex digits of the commit>. The
# module proxy reachable here does not report that hash (no Origin in .info) and refuses
# @latest, lists, tags and bare hashes, so it is not known yet: set it here or through
# IIS_CLIENTCERT_PY_LANGHOST_VERSION once known, and the host is built from that module.
PY_LANGHOST_VERSION="${IIS_CLIENTCERT_PY_LANGHOST_VERSION:-}"
# Otherwise the host is built from the newest served sdk/v3 release that still contained it
# as a package (sdk/v3/python/cmd/pulumi-language-python): v3.68.0. That older host runs
# programs of the current SDK with the current engine (tests/engine proves it), with one
# difference: it does not read `runtime.options.virtualenv` from Pulumi.yaml, so the
# environment must name the interpreter (PULUMI_PYTHON_CMD=<repo>/.venv/bin/python; `make env`
# and the test fixtures set it).
LANGHOST_FALLBACK_SDK=v3.68.0
LANGHOST_FALLBACK_PKG=github.com/pulumi/pulumi/sdk/v3/python/cmd/pulumi-language-python

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_ROOT="${IIS_CLIENTCERT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iis-clientcert}"
DEST="$CACHE_ROOT/pulumi-$PINNED"
BIN="$DEST/bin"
STAMP="$DEST/.complete"

log() { printf '[ensure-pulumi] %s\n' "$*" >&2; }
die() {
	printf '[ensure-pulumi] ERROR: %s\n' "$*" >&2
	exit 1
}

# version_ge A B: true when version A >= version B (leading "v"/"go" ignored).
version_ge() {
	local a="${1#v}" b="${2#v}"
	a="${a#go}"
	b="${b#go}"
	[ "$(printf '%s\n%s\n' "$b" "$a" | sort -V | head -n1)" = "$b" ]
}

cli_version() { # prints "v3.x.y" or nothing
	"$1" version 2>/dev/null | head -n1 | tr -d '[:space:]' || true
}

# A pulumi on PATH that is not our own cached build and is new enough.
path_pulumi_dir() {
	[ "${IIS_CLIENTCERT_IGNORE_PATH_PULUMI:-}" = "1" ] && return 1
	local p v
	p="$(command -v pulumi 2>/dev/null)" || return 1
	p="$(cd "$(dirname "$p")" && pwd)"
	[ "$p" = "$BIN" ] && return 1
	v="$(cli_version "$p/pulumi")"
	[ -n "$v" ] || return 1
	if version_ge "$v" "$PINNED"; then
		printf '%s\n' "$p"
		return 0
	fi
	log "pulumi on PATH ($p/pulumi) is $v, older than $PINNED: using the pinned build instead"
	return 1
}

cache_ok() {
	[ -f "$STAMP" ] && [ -x "$BIN/pulumi" ] && [ -x "$BIN/pulumi-resource-pulumi-python" ] &&
		[ "$(cli_version "$BIN/pulumi")" = "$PINNED" ]
}

if [ "${1:-}" = "--print-dir" ]; then
	if d="$(path_pulumi_dir)"; then
		printf '%s\n' "$d"
	else
		cache_ok || log "the pinned CLI is not built yet: run scripts/ensure-pulumi.sh (or make setup-pulumi)"
		printf '%s\n' "$BIN"
	fi
	exit 0
elif [ $# -gt 0 ]; then
	die "unknown argument: $1 (usage: $0 [--print-dir])"
fi

if d="$(path_pulumi_dir)"; then
	log "using pulumi $(cli_version "$d/pulumi") from PATH ($d)"
	printf '%s\n' "$d"
	exit 0
fi

# --- the Go build ---------------------------------------------------------------------------

check_go() {
	command -v go >/dev/null 2>&1 ||
		die "Go is not installed. Building Pulumi $PINNED needs Go >= $MIN_GO on PATH (Debian/Ubuntu: a golang package of that version, or the official Go distribution). Alternatively put a pulumi >= $PINNED on PATH."
	local gv
	gv="$(go env GOVERSION 2>/dev/null || true)"
	[ -n "$gv" ] || die "cannot read the Go version (go env GOVERSION failed)"
	version_ge "$gv" "go$MIN_GO" ||
		die "Go is too old: found $gv, building Pulumi $PINNED needs Go >= $MIN_GO. Install a newer Go (or set GOTOOLCHAIN=go$MIN_GO or newer so the go command fetches it), or put a pulumi >= $PINNED on PATH."
	log "using $gv ($(command -v go))"
}

langhost_wanted() {
	if [ -n "$PY_LANGHOST_VERSION" ]; then
		printf '%s@%s\n' "$LANGHOST_MOD" "$PY_LANGHOST_VERSION"
	else
		printf '%s@%s\n' "$LANGHOST_FALLBACK_PKG" "$LANGHOST_FALLBACK_SDK"
	fi
}

# build_langhost OUT_DIR: build pulumi-language-python into OUT_DIR. Non-fatal: without the
# host, the Automation API's inline programs still work (tests/engine has an inline mode).
build_langhost() {
	local out="$1" src="$DEST/langhost-src" pkg ver
	rm -rf "$src"
	mkdir -p "$src"
	if [ -n "$PY_LANGHOST_VERSION" ]; then
		pkg="$LANGHOST_MOD"
		ver="$PINNED"
		sed "s/@VERSION@/$PINNED/g" "$SCRIPT_DIR/pulumi-build.go.mod-template" >"$src/go.mod"
		log "building pulumi-language-python from $LANGHOST_MOD@$PY_LANGHOST_VERSION"
		(cd "$src" && go get "$LANGHOST_MOD@$PY_LANGHOST_VERSION" >&2) || {
			log "WARNING: $LANGHOST_MOD@$PY_LANGHOST_VERSION cannot be had; continuing without the Python language host"
			return 0
		}
	else
		pkg="$LANGHOST_FALLBACK_PKG"
		ver="$LANGHOST_FALLBACK_SDK"
		printf 'module iis-clientcert.local/pulumi-langhost-build\n\ngo 1.26.6\n\nrequire github.com/pulumi/pulumi/sdk/v3 %s\n' \
			"$LANGHOST_FALLBACK_SDK" >"$src/go.mod"
		log "building pulumi-language-python from sdk/v3@$LANGHOST_FALLBACK_SDK (the module of the $PINNED host is not reachable; see PY_LANGHOST_VERSION in $0)"
	fi
	if (cd "$src" && go build -mod=mod -trimpath -ldflags "-s -w -X $VERSION_VAR=$ver" \
		-o "$out/pulumi-language-python" "$pkg" >&2); then
		log "built pulumi-language-python ($ver)"
	else
		log "WARNING: building the Python language host failed (see above); continuing without it:"
		log "  a plain 'pulumi up' on a python project cannot start its program, Automation API inline programs still work"
		rm -f "$out/pulumi-language-python"
	fi
}

build() {
	check_go
	mkdir -p "$DEST"
	local src="$DEST/src" tmp="$DEST/bin.tmp.$$"
	rm -rf "$tmp"
	mkdir -p "$src" "$tmp"
	trap 'rm -rf "'"$tmp"'"' EXIT

	log "preparing the wrapper module in $src"
	sed "s/@VERSION@/$PINNED/g" "$SCRIPT_DIR/pulumi-build.go.mod-template" >"$src/go.mod"
	cat >"$src/tools.go" <<'EOF'
//go:build tools

package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
EOF

	log "building pulumi $PINNED (downloads modules on the first run; a few minutes)"
	local t0=$SECONDS
	if ! (cd "$src" && go build -mod=mod -trimpath -ldflags "-s -w -X $VERSION_VAR=$PINNED" \
		-o "$tmp/pulumi" "$CLI_PKG" >&2); then
		die "building the Pulumi CLI failed (see the go output above). Check that Go >= $MIN_GO is installed and the Go module proxy is reachable (GOPROXY=$(go env GOPROXY)); the wrapper module is in $src."
	fi
	log "built pulumi in $((SECONDS - t0))s"

	local sdk_ver sdk_dir
	sdk_ver="$(cd "$src" && go list -mod=mod -m -f '{{.Version}}' "$SDK_MOD")"
	[ "$sdk_ver" = "$PINNED" ] || log "WARNING: $SDK_MOD resolved to $sdk_ver, not $PINNED"
	sdk_dir="$(cd "$src" && go list -mod=mod -m -f '{{.Dir}}' "$SDK_MOD")"
	[ -n "$sdk_dir" ] && [ -d "$sdk_dir/python" ] || die "cannot find $SDK_MOD in the module cache"
	install -m 0755 "$sdk_dir/python/cmd/pulumi-language-python-exec" "$tmp/pulumi-language-python-exec"
	install -m 0755 "$sdk_dir/python/dist/pulumi-resource-pulumi-python" "$tmp/pulumi-resource-pulumi-python"
	log "copied pulumi-language-python-exec and pulumi-resource-pulumi-python from $sdk_dir"

	build_langhost "$tmp"

	local v
	v="$(cli_version "$tmp/pulumi")"
	[ "$v" = "$PINNED" ] || die "the built CLI reports version '$v', expected $PINNED"

	rm -rf "$BIN"
	mv "$tmp" "$BIN"
	trap - EXIT
	write_stamp
	log "pulumi $PINNED ready in $BIN"
}

# The cached build was made for another language host choice (e.g. PY_LANGHOST_VERSION set).
need_langhost_retry() {
	! grep -qxF "langhost=$(langhost_wanted)" "$STAMP" 2>/dev/null
}

if cache_ok && ! need_langhost_retry; then
	log "using cached pulumi $PINNED ($BIN)"
	printf '%s\n' "$BIN"
	exit 0
fi

write_stamp() {
	printf 'version=%s\nlanghost=%s\nbuilt=%s\n' "$PINNED" "$(langhost_wanted)" \
		"$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$STAMP"
}

mkdir -p "$CACHE_ROOT"
# One build at a time (make and the test session may both ask).
if command -v flock >/dev/null 2>&1; then
	exec 9>"$CACHE_ROOT/.pulumi-$PINNED.lock"
	flock 9
fi
if cache_ok; then
	if need_langhost_retry; then
		# Only the language host choice changed: rebuild it alone.
		check_go
		build_langhost "$BIN"
		write_stamp
	fi
	log "using cached pulumi $PINNED ($BIN)"
else
	build
fi
printf '%s\n' "$BIN"
