#!/usr/bin/env bash
# Make the YAML and Node.js language hosts available (for programs that use ClientCertSite
# from Pulumi YAML or TypeScript, README "Use from other languages") and print where.
# Only what needs them calls this (the engine tests of examples/yaml and examples/typescript,
# `make setup-language-hosts`); the Python project never does.
#
#   scripts/ensure-language-hosts.sh [yaml] [nodejs]   build what is missing (default: both)
#   scripts/ensure-language-hosts.sh --print-dir        print the hosts' folder (alone); never builds
#
# Output (stdout, one KEY=VALUE a line, shell-quoted; progress and errors go to stderr):
#   LANGUAGE_HOSTS_BIN=<folder with pulumi-language-yaml / pulumi-language-nodejs>
#   TYPESCRIPT_NODE_MODULES=<node_modules for examples/typescript>   (with nodejs)
#
# Everything is cached beside the CLI, in ${IIS_CLIENTCERT_CACHE:-~/.cache/iis-clientcert}:
#   language-hosts/bin/pulumi-language-yaml    go build of github.com/pulumi/pulumi-yaml
#                                              cmd/pulumi-language-yaml@$YAML_VERSION (about a minute)
#   language-hosts/bin/pulumi-language-nodejs  go build of sdk/v3@$NODEJS_SDK's nodejs host (the
#                                              newest served release that still contained it as a
#                                              package; see scripts/ensure-pulumi.sh for the
#                                              Python host's same story)
#   typescript-example-<hash>/node_modules     `npm ci` of examples/typescript/package-lock.json
# Needs Go (as scripts/ensure-pulumi.sh) and, for nodejs, node >= 18 and npm; reaches only
# the Go module proxy and the npm registry.
set -euo pipefail

YAML_MOD=github.com/pulumi/pulumi-yaml
YAML_VERSION=v1.25.0
YAML_PKG=$YAML_MOD/cmd/pulumi-language-yaml
NODEJS_SDK=v3.68.0
NODEJS_PKG=github.com/pulumi/pulumi/sdk/v3/nodejs/cmd/pulumi-language-nodejs
VERSION_VAR=github.com/pulumi/pulumi/sdk/v3/go/common/version.Version
MIN_NODE_MAJOR=18

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_ROOT="${IIS_CLIENTCERT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iis-clientcert}"
DEST="$CACHE_ROOT/language-hosts"
BIN="$DEST/bin"
TS_EXAMPLE="$REPO/examples/typescript"

log() { printf '[ensure-language-hosts] %s\n' "$*" >&2; }
die() {
	printf '[ensure-language-hosts] ERROR: %s\n' "$*" >&2
	exit 1
}

if [ "${1:-}" = "--print-dir" ]; then
	printf '%s\n' "$BIN"
	exit 0
fi

want_yaml=0
want_nodejs=0
[ $# -eq 0 ] && set -- yaml nodejs
for arg in "$@"; do
	case "$arg" in
	yaml) want_yaml=1 ;;
	nodejs) want_nodejs=1 ;;
	*) die "unknown argument: $arg (usage: $0 [yaml] [nodejs] | --print-dir)" ;;
	esac
done

check_go() {
	command -v go >/dev/null 2>&1 ||
		die "Go is not installed: the language hosts are built from Go modules (as the Pulumi CLI, see scripts/ensure-pulumi.sh)"
}

# host_ok NAME VERSION: the cached host was built from VERSION.
host_ok() {
	[ -x "$BIN/$1" ] && [ "$(cat "$DEST/.$1" 2>/dev/null)" = "$2" ]
}

# build_host NAME VERSION PKG GOMOD: go build PKG (in a wrapper module whose go.mod is GOMOD)
# into the cache, atomically.
build_host() {
	local name="$1" version="$2" pkg="$3" gomod="$4" src="$DEST/src-$1" t0=$SECONDS
	check_go
	rm -rf "$src"
	mkdir -p "$src" "$BIN"
	printf '%s' "$gomod" >"$src/go.mod"
	log "building $name ($version; downloads modules on the first run, about a minute)"
	if ! (cd "$src" && go build -mod=mod -trimpath -ldflags "-s -w -X $VERSION_VAR=${version#v}" \
		-o "$BIN/$name.tmp" "$pkg" >&2); then
		rm -f "$BIN/$name.tmp"
		die "building $name from $pkg@$version failed (see the go output above; the Go module proxy must be reachable: GOPROXY=$(go env GOPROXY))"
	fi
	mv "$BIN/$name.tmp" "$BIN/$name"
	printf '%s' "$version" >"$DEST/.$name"
	log "built $name in $((SECONDS - t0))s"
}

mkdir -p "$DEST"
# One build at a time (several test sessions may ask at once).
if command -v flock >/dev/null 2>&1; then
	exec 9>"$DEST/.lock"
	flock 9
fi

if [ $want_yaml = 1 ]; then
	if host_ok pulumi-language-yaml "$YAML_VERSION"; then
		log "using cached pulumi-language-yaml $YAML_VERSION"
	else
		build_host pulumi-language-yaml "$YAML_VERSION" "$YAML_PKG" \
			"$(printf 'module iis-clientcert.local/langhost-yaml\n\ngo 1.26.6\n\nrequire %s %s\n' "$YAML_MOD" "$YAML_VERSION")"
	fi
fi

node_modules=""
if [ $want_nodejs = 1 ]; then
	command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ||
		die "node and npm are needed for TypeScript programs (node >= $MIN_NODE_MAJOR)"
	major="$(node -p 'process.versions.node.split(".")[0]')"
	[ "$major" -ge $MIN_NODE_MAJOR ] || die "node $(node --version) is too old: TypeScript programs need node >= $MIN_NODE_MAJOR"
	if host_ok pulumi-language-nodejs "$NODEJS_SDK"; then
		log "using cached pulumi-language-nodejs $NODEJS_SDK"
	else
		build_host pulumi-language-nodejs "$NODEJS_SDK" "$NODEJS_PKG" \
			"$(printf 'module iis-clientcert.local/langhost-nodejs\n\ngo 1.26.6\n\nrequire github.com/pulumi/pulumi/sdk/v3 %s\n' "$NODEJS_SDK")"
	fi
	# The example's npm dependencies, keyed by its lock file: `npm ci` once per lock.
	[ -f "$TS_EXAMPLE/package-lock.json" ] || die "$TS_EXAMPLE/package-lock.json is missing"
	hash="$(cat "$TS_EXAMPLE/package.json" "$TS_EXAMPLE/package-lock.json" | sha256sum | cut -c1-16)"
	deps="$CACHE_ROOT/typescript-example-$hash"
	node_modules="$deps/node_modules"
	if [ -f "$deps/.complete" ] && [ -d "$node_modules/@pulumi/pulumi" ]; then
		log "using cached node_modules of examples/typescript ($deps)"
	else
		rm -rf "$deps"
		mkdir -p "$deps"
		cp "$TS_EXAMPLE/package.json" "$TS_EXAMPLE/package-lock.json" "$deps/"
		log "npm ci for examples/typescript into $deps"
		t0=$SECONDS
		if ! (cd "$deps" && npm ci --no-audit --no-fund --loglevel=error >&2); then
			die "npm ci failed for examples/typescript (see above; the npm registry must be reachable)"
		fi
		touch "$deps/.complete"
		log "npm ci took $((SECONDS - t0))s"
	fi
fi

printf 'LANGUAGE_HOSTS_BIN=%q\n' "$BIN"
[ -n "$node_modules" ] && printf 'TYPESCRIPT_NODE_MODULES=%q\n' "$node_modules"
exit 0
