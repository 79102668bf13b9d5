#!/usr/bin/env bash
# Builds helm from its own Go modules, both majors the chart supports, no download of release
# binaries:
#
#   helm    helm.sh/helm/v3 at HELM3_VERSION (default v3.22.1): the oldest major the chart
#           supports, used by the tests, hack/render-deploy.sh and the demo
#   helm4   helm.sh/helm/v4 at HELM4_VERSION (default v4.3.2): tests/it/chart.rs lints and
#           renders the chart with it too
#
# The builds are cached outside the work tree, keyed by version:
#   ${XDG_CACHE_HOME:-~/.cache}/pod-identity-webhook/helm-vX.Y.Z/helm
# and linked into .../pod-identity-webhook/bin as `helm` and `helm4`. Idempotent: a binary
# already built is not built again. kubectl is not installed here: hack/install-control-plane.sh
# builds it with the cluster's Kubernetes version.
#
# Usage: hack/install-helm.sh    (prints the install dir and the helm versions)
# Env:   HELM3_VERSION, HELM4_VERSION  the module versions
#        XDG_CACHE_HOME  cache root (default: $HOME/.cache)
#        PIW_SKIP_HELM4=1  do not build helm4
set -euo pipefail

# shellcheck source=hack/tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

log() { printf '[install-helm] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# reports VERSION BINARY: whether BINARY is a helm that says it is VERSION.
reports() {
  [[ -x "$2" ]] && [[ "$("$2" version --template '{{.Version}}' 2>/dev/null)" == "$1" ]]
}

# build_helm MAJOR VERSION DEST: helm.sh/helm/vMAJOR at VERSION into DEST.
build_helm() {
  local major="$1" version="$2" dest="$3" module="helm.sh/helm/v$1" start=$SECONDS
  local dir="$BUILD_ROOT/v$major"
  mkdir -p "$dir"
  log "building helm $version from $module with $(go version) (one time, a few minutes)"
  printf 'module local.invalid/helm%s-build\n\ngo 1.24\n\nrequire %s %s\n' \
    "$major" "$module" "$version" >"$dir/go.mod"
  # What helm's own Makefile stamps in: the version it reports and, for Helm 3, the
  # Kubernetes version `helm template` and `helm lint` assume without a cluster (that of
  # the client-go it is built with; Helm 4 reads it from the build information itself).
  local ldflags="-s -w -X $module/internal/version.version=$version"
  ldflags+=" -X $module/internal/version.gitTreeState=clean"
  if [[ "$major" == 3 ]]; then
    local client_go kube_minor
    client_go="$(cd "$dir" && go list -m -f '{{.Version}}' k8s.io/client-go)" ||
      die "could not resolve the modules of $module@$version (is the version right?)"
    kube_minor="$(cut -d. -f2 <<<"$client_go")"
    local p
    for p in pkg/lint/rules pkg/chartutil; do
      ldflags+=" -X $module/$p.k8sVersionMajor=1 -X $module/$p.k8sVersionMinor=$kube_minor"
    done
  fi
  PIW_GO_BUILD_CACHE="$BUILD_ROOT/go-build-cache" \
    go_build_in "$dir" -trimpath -ldflags="$ldflags" -o "$dest.tmp" "$module/cmd/helm" ||
    die "helm $version did not build (see the go output above)"
  reports "$version" "$dest.tmp" || die "the freshly built helm does not report $version"
  mv -f "$dest.tmp" "$dest"
  log "helm $version built in $((SECONDS - start)) s"
}

wanted=("3 $HELM3_VERSION $PIW_HELM3_BIN helm")
if [[ "${PIW_SKIP_HELM4:-0}" != "1" ]]; then
  wanted+=("4 $HELM4_VERSION $PIW_HELM4_BIN helm4")
fi

mkdir -p "$PIW_TOOLS_BIN"
BUILD_ROOT=""
trap '[[ -z "$BUILD_ROOT" ]] || rm -rf "$BUILD_ROOT"' EXIT
for entry in "${wanted[@]}"; do
  read -r major version bin name <<<"$entry"
  if reports "$version" "$bin"; then
    log "helm $version already built"
  else
    command -v go >/dev/null 2>&1 || die "go is required to build helm (install Go 1.26 or later)"
    go_build_env
    # Both builds share one Go build cache: most of their dependencies are the same.
    [[ -n "$BUILD_ROOT" ]] || BUILD_ROOT="$(new_module_dir)"
    mkdir -p "$(dirname "$bin")"
    build_helm "$major" "$version" "$bin"
  fi
  ln -sfn "$bin" "$PIW_TOOLS_BIN/$name"
done

echo "$PIW_TOOLS_BIN"
"$PIW_TOOLS_BIN/helm" version --short
if [[ "${PIW_SKIP_HELM4:-0}" != "1" ]]; then
  "$PIW_TOOLS_BIN/helm4" version --short
fi
