#!/usr/bin/env bash
# Builds the reference webhook's server (github.com/aws/amazon-eks-pod-identity-webhook, the
# program we replace) from its Go module, for the load benchmark to measure beside ours.
#
# Cached outside the work tree, one directory per version:
#   ${XDG_CACHE_HOME:-~/.cache}/pod-identity-webhook/reference-webhook-<version>/amazon-eks-pod-identity-webhook
# Idempotent: with the binary there it only prints its path (the last line of output).
# REFERENCE_WEBHOOK_VERSION picks another version (default v0.6.17).
set -euo pipefail

# shellcheck source=hack/tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

log() { printf '[install-reference-webhook] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

version="${REFERENCE_WEBHOOK_VERSION:-v0.6.17}"
module=github.com/aws/amazon-eks-pod-identity-webhook
dir="$PIW_CACHE_DIR/reference-webhook-$version"
bin="$dir/amazon-eks-pod-identity-webhook"

if [ -x "$bin" ]; then
  log "reference webhook $version already built"
else
  command -v go >/dev/null 2>&1 || die "go is required to build the reference webhook"
  start=$SECONDS
  log "building $module@$version with $(GOTOOLCHAIN=local go version)"
  # Built into a scratch GOBIN and moved into place, so an interrupted build leaves nothing
  # that looks finished.
  scratch="$(mktemp -d "$PIW_CACHE_DIR/.reference-webhook-build.XXXXXX")"
  trap 'rm -rf "$scratch"' EXIT
  GOTOOLCHAIN=local GOBIN="$scratch" GOFLAGS="-buildvcs=false" CGO_ENABLED=0 \
    go install -trimpath -ldflags="-s -w" "$module@$version" \
    || die "$module@$version did not build (see the go output above)"
  "$scratch/amazon-eks-pod-identity-webhook" --help >/dev/null 2>&1 \
    || die "the freshly built reference webhook does not run"
  mkdir -p "$dir"
  mv -f "$scratch/amazon-eks-pod-identity-webhook" "$bin"
  log "built in $((SECONDS - start)) s"
fi
echo "$bin"
