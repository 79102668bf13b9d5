#!/usr/bin/env bash
# Installs the binaries of the local cluster (hack/control-plane.sh and hack/node.sh),
# built from Go modules, no container engine, no download of release tarballs:
#
#   etcd                     go.etcd.io/etcd/server/v3 at ETCD_VERSION (default v3.6.16)
#   kube-apiserver, kubelet, k8s.io/kubernetes at KUBE_VERSION (default v1.37.2), with each
#   kube-controller-manager, staging module (k8s.io/api, ...) pinned by a `replace` line
#   kube-scheduler, kubectl  to its published v0.X.Y
#
# The builds are cached outside the work tree, keyed by version:
#   ${XDG_CACHE_HOME:-~/.cache}/pod-identity-webhook/kubernetes-vX.Y.Z/<binary>
#   ${XDG_CACHE_HOME:-~/.cache}/pod-identity-webhook/etcd-vX.Y.Z/etcd
# and linked into .../pod-identity-webhook/bin, where the scripts and tests look.
# Idempotent: with everything built it only prints the paths. A cold build of all five
# Kubernetes binaries takes about 8 minutes on 2 cores, etcd about 40 s.
#
# Also installs the Debian packages the scripts call (openssl, curl).
#
# Environment:
#   KUBE_VERSION   k8s.io/kubernetes version (v1.30.14 and later are known to work)
#   ETCD_VERSION   etcd version
#   XDG_CACHE_HOME cache root (default ~/.cache)
set -euo pipefail

# shellcheck source=hack/tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

log() { printf '[install-control-plane] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 && SUDO="sudo"
fi

mkdir -p "$PIW_TOOLS_BIN" "$PIW_KUBE_DIR" "$(dirname "$PIW_ETCD_BIN")"

apt_pkgs=()
command -v openssl >/dev/null 2>&1 || apt_pkgs+=(openssl)
command -v curl >/dev/null 2>&1 || apt_pkgs+=(curl ca-certificates)
if [ "${#apt_pkgs[@]}" -gt 0 ]; then
  log "installing Debian packages: ${apt_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${apt_pkgs[@]}"
fi

command -v go >/dev/null 2>&1 || die "go is required to build etcd and Kubernetes (install Go 1.24 or later)"
go_build_env

build_etcd() {
  local tmp start=$SECONDS
  tmp="$(new_module_dir)"
  log "building etcd $ETCD_VERSION with $(go version) (one time, about 40 s)"
  printf 'module local.invalid/etcd-build\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
    "$ETCD_VERSION" >"$tmp/go.mod"
  go_build_in "$tmp" -trimpath -ldflags="-s -w" -o "$PIW_ETCD_BIN.tmp" go.etcd.io/etcd/server/v3 ||
    { rm -rf "$tmp"; die "etcd $ETCD_VERSION did not build (see the go output above)"; }
  rm -rf "$tmp"
  "$PIW_ETCD_BIN.tmp" --version >/dev/null
  mv -f "$PIW_ETCD_BIN.tmp" "$PIW_ETCD_BIN"
  log "etcd $ETCD_VERSION built in $((SECONDS - start)) s"
}

KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

build_kubernetes() {
  local v="$KUBE_VERSION" tmp start=$SECONDS
  # k8s.io/kubernetes v1.X.Y <-> staging modules (k8s.io/api, ...) v0.X.Y
  local staging_v="v0.${v#v1.}"
  tmp="$(new_module_dir)"
  log "building Kubernetes $v (${KUBE_BINARIES[*]}) with $(go version), staging modules $staging_v"
  log "one-time build, about 8 minutes on 2 cores; cached in $PIW_KUBE_DIR"

  # k8s.io/kubernetes requires its staging modules as v0.0.0 replaced by ./staging/...,
  # which only resolves inside its own repository: replace each with its published version.
  local gomod staging m
  gomod="$(cd "$tmp" && go list -m -f '{{.GoMod}}' "k8s.io/kubernetes@$v")" ||
    die "could not fetch go.mod of k8s.io/kubernetes@$v (is the version right?)"
  staging="$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$gomod" | sort -u)"
  [ -n "$staging" ] || die "no staging modules found in $gomod"
  {
    printf 'module local.invalid/kubernetes-build\n\ngo 1.24\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$v"
    for m in $staging; do printf '\t%s => %s %s\n' "$m" "$m" "$staging_v"; done
    printf ')\n'
  } >"$tmp/go.mod"

  local major minor bdate ldflags="-s -w" p
  major="${v#v}"; major="${major%%.*}"
  minor="${v#v*.}"; minor="${minor%%.*}"
  bdate="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$bdate"
  done
  local out="$tmp/out" pkgs=() b
  mkdir -p "$out"
  for b in "${KUBE_BINARIES[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  go_build_in "$tmp" -trimpath -ldflags="$ldflags" -o "$out/" "${pkgs[@]}" ||
    { rm -rf "$tmp"; die "Kubernetes $v did not build (see the go output above)"; }
  for b in "${KUBE_BINARIES[@]}"; do
    "$out/$b" --version >/dev/null 2>&1 || [ "$b" = kubectl ] ||
      { rm -rf "$tmp"; die "the freshly built $b does not run"; }
    mv -f "$out/$b" "$PIW_KUBE_DIR/$b"
  done
  rm -rf "$tmp"
  log "Kubernetes $v built in $((SECONDS - start)) s"
}

kube_built() {
  local b
  for b in "${KUBE_BINARIES[@]}"; do [ -x "$PIW_KUBE_DIR/$b" ] || return 1; done
}

if [ -x "$PIW_ETCD_BIN" ]; then log "etcd $ETCD_VERSION already built"; else build_etcd; fi
if kube_built; then log "Kubernetes $KUBE_VERSION already built"; else build_kubernetes; fi

# The unversioned names in the bin dir point at the selected versions.
ln -sfn "$PIW_ETCD_BIN" "$PIW_TOOLS_BIN/etcd"
for b in "${KUBE_BINARIES[@]}"; do ln -sfn "$PIW_KUBE_DIR/$b" "$PIW_TOOLS_BIN/$b"; done

echo "etcd:           $PIW_ETCD_BIN ($("$PIW_ETCD_BIN" --version 2>/dev/null | head -1))"
for b in "${KUBE_BINARIES[@]}"; do
  printf '%-24s %s\n' "$b:" "$PIW_KUBE_DIR/$b"
done
echo "kubectl version: $("$PIW_KUBE_DIR/kubectl" version --client 2>/dev/null | head -1)"
