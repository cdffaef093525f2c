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

# The Python language host module has no tags of its own: it is only reachable through the
# pseudo-version of a release commit. The release commit of v3.274.1 is dated
# 2026-11-05T12:45:06Z (the Time of sdk/v3@v3.274.1), so the version would be
# v3.0.0-20261105124506-<first 12 hex digits of that commit>; the module proxy reachable here
# does not report the commit hash (no Origin in .info) and refuses @latest and lists, so
# the hash is not known yet. Set it here (or via the environment) once known.
PY_LANGHOST_VERSION="${IIS_CLIENTCERT_PY_LANGHOST_VERSION:-}"

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

build_langhost() { # $1 = src dir, $2 = output bin dir; non-fatal
	local src="$1" out="$2"
	if [ -z "$PY_LANGHOST_VERSION" ]; then
		log "WARNING: the Python language host (pulumi-language-python) is not built: no served version of"
		log "  $LANGHOST_MOD is known (see PY_LANGHOST_VERSION in $0)."
		log "  Projects run through the Automation API's inline programs work (tests/engine does);"
		log "  a plain 'pulumi up' on a Pulumi.yaml python project cannot start its program."
		return 0
	fi
	log "building pulumi-language-python from $LANGHOST_MOD@$PY_LANGHOST_VERSION"
	if (cd "$src" && go get "$LANGHOST_MOD@$PY_LANGHOST_VERSION" >&2 &&
		go build -mod=mod -trimpath -ldflags "-s -w -X $VERSION_VAR=$PINNED" \
			-o "$out/pulumi-language-python" "$LANGHOST_MOD" >&2); then
		log "built pulumi-language-python"
	else
		log "WARNING: building the Python language host failed (see above); continuing without it"
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

	build_langhost "$src" "$tmp"

	local v
	v="$(cli_version "$tmp/pulumi")"
	[ "$v" = "$PINNED" ] || die "the built CLI reports version '$v', expected $PINNED"

	rm -rf "$BIN"
	mv "$tmp" "$BIN"
	trap - EXIT
	printf 'version=%s\nlanghost=%s\nbuilt=%s\n' "$PINNED" "${PY_LANGHOST_VERSION:-none}" \
		"$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$STAMP"
	log "pulumi $PINNED ready in $BIN"
}

need_langhost_retry() {
	[ -n "$PY_LANGHOST_VERSION" ] && [ ! -x "$BIN/pulumi-language-python" ] &&
		! grep -qx "langhost=$PY_LANGHOST_VERSION" "$STAMP" 2>/dev/null
}

if cache_ok && ! need_langhost_retry; then
	log "using cached pulumi $PINNED ($BIN)"
	printf '%s\n' "$BIN"
	exit 0
fi

mkdir -p "$CACHE_ROOT"
# One build at a time (make and the test session may both ask).
if command -v flock >/dev/null 2>&1; then
	exec 9>"$CACHE_ROOT/.pulumi-$PINNED.lock"
	flock 9
	if cache_ok && ! need_langhost_retry; then
		log "using cached pulumi $PINNED ($BIN), built by a concurrent run"
		printf '%s\n' "$BIN"
		exit 0
	fi
fi
build
printf '%s\n' "$BIN"
