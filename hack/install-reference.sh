#!/usr/bin/env bash
# Builds the differential test's driver (tests/reference): a small Go program of ours that
# answers pod cases with the reference webhook's own handler code
# (github.com/aws/amazon-eks-pod-identity-webhook at the version its go.mod requires).
#
# The build is cached outside the work tree, keyed by the reference version and a hash of the
# driver's files (so an edited driver is rebuilt, and tests/it/differential.rs, which computes
# the same key, never runs a stale one):
#   ${XDG_CACHE_HOME:-~/.cache}/pod-identity-webhook/reference-webhook-<version>-<hash>/reference-driver
# and linked as .../pod-identity-webhook/bin/reference-driver.
# Idempotent: with the driver built it only prints the path. A cold build (modules from the
# Go module proxy, then compiling client-go and friends) takes about a minute on 2 cores.
#
# The key: SHA-256 over every regular file of tests/reference in byte order of their names,
# each as "<name>\0<size>\0<content>"; its first 16 hex digits.
set -euo pipefail

# shellcheck source=hack/tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

log() { printf '[install-reference] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests/reference" && pwd)"
command -v go >/dev/null 2>&1 || die "go is required to build the reference driver (Go 1.26.3 or later)"

version="$(awk '$1 == "github.com/aws/amazon-eks-pod-identity-webhook" { print $2 }' "$src/go.mod")"
[ -n "$version" ] || die "$src/go.mod does not require github.com/aws/amazon-eks-pod-identity-webhook"

hash="$(
  cd "$src"
  LC_ALL=C find . -maxdepth 1 -type f -printf '%f\n' | LC_ALL=C sort | while IFS= read -r f; do
    printf '%s\0%s\0' "$f" "$(stat -c %s "$f")"
    cat "$f"
  done | sha256sum | cut -c1-16
)"
dir="$PIW_CACHE_DIR/reference-webhook-$version-$hash"
bin="$dir/reference-driver"

if [ -x "$bin" ]; then
  log "reference driver ($version, $hash) already built"
else
  start=$SECONDS
  log "building the reference driver against amazon-eks-pod-identity-webhook $version with $(GOTOOLCHAIN=local go version)"
  mkdir -p "$dir"
  (
    cd "$src"
    GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
      go build -trimpath -ldflags="-s -w" -o "$bin.tmp" .
  ) || { rm -f "$bin.tmp"; die "the reference driver did not build (see the go output above)"; }
  # No cases in, no answers out, exit 0: it starts.
  [ -z "$("$bin.tmp" </dev/null)" ] || { rm -f "$bin.tmp"; die "the freshly built driver does not run"; }
  mv -f "$bin.tmp" "$bin"
  log "built in $((SECONDS - start)) s"
fi

mkdir -p "$PIW_TOOLS_BIN"
ln -sfn "$bin" "$PIW_TOOLS_BIN/reference-driver"
echo "reference-driver: $bin"
