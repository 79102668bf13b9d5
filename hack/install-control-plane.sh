#!/usr/bin/env bash
# Installs what hack/control-plane.sh needs to run a real, local Kubernetes
# control plane (etcd + kube-apiserver) on loopback, without any container
# engine:
#
#   * etcd          - Debian package etcd-server (3.4.23 on bookworm)
#   * kube-apiserver - built from the Go module k8s.io/kubernetes, pinned to
#                     the newest v1.30.x patch (see KUBE_APISERVER_VERSION),
#                     cached outside the work tree keyed by version
#   * kubectl       - /usr/bin/kubectl if present, else the one that
#                     hack/install-helm.sh puts into the cache bin dir
#
# Idempotent: re-running it when everything is present only prints the paths.
#
# Why v1.30.x: kube-apiserver 1.31+ probes etcd health endpoints that only
# exist in etcd >= 3.4.29 / 3.5.11, while Debian ships etcd 3.4.23.
#
# Environment:
#   KUBE_APISERVER_VERSION  k8s.io/kubernetes version to build (default below)
#   XDG_CACHE_HOME          cache root (default ~/.cache)
set -euo pipefail

# shellcheck source=hack/tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/tools.sh"
BIN_DIR="$PIW_TOOLS_BIN"
APISERVER_BIN="$BIN_DIR/kube-apiserver-$KUBE_APISERVER_VERSION"

log() { printf '[install-control-plane] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 && SUDO="sudo"
fi

mkdir -p "$BIN_DIR"

# --------------------------------------------------------------------------
# Debian packages: etcd-server, plus openssl/curl used by control-plane.sh.
# --------------------------------------------------------------------------
apt_pkgs=()
[ -x /usr/bin/etcd ] || apt_pkgs+=(etcd-server)
command -v openssl >/dev/null 2>&1 || apt_pkgs+=(openssl)
command -v curl >/dev/null 2>&1 || apt_pkgs+=(curl ca-certificates)

if [ "${#apt_pkgs[@]}" -gt 0 ]; then
  log "installing Debian packages: ${apt_pkgs[*]}"
  # Keep the package's own etcd service from being started: we run etcd as
  # our own process on ephemeral ports.  policy-rc.d exit 101 = "action
  # forbidden" for invoke-rc.d / deb-systemd-invoke.
  created_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 0755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  cleanup_policy() {
    if [ -n "$created_policy" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
  }
  trap cleanup_policy EXIT
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${apt_pkgs[@]}"
  cleanup_policy
  trap - EXIT
  # If systemd is running and started/enabled the packaged unit anyway, stop
  # and disable it: it would hold 2379/2380 and a data dir we do not use.
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now etcd.service >/dev/null 2>&1 || true
  fi
fi
[ -x /usr/bin/etcd ] || die "/usr/bin/etcd missing after installing etcd-server"
ETCD_BIN=/usr/bin/etcd

# --------------------------------------------------------------------------
# kube-apiserver, built from source via the Go module proxy.
# --------------------------------------------------------------------------
build_apiserver() {
  command -v go >/dev/null 2>&1 || die "go is required to build kube-apiserver"
  export GOTOOLCHAIN=local
  export GOFLAGS="-mod=mod -buildvcs=false"
  export CGO_ENABLED=0

  local v="$KUBE_APISERVER_VERSION"
  # k8s.io/kubernetes v1.X.Y <-> staging modules (k8s.io/api, ...) v0.X.Y
  local staging_v="v0.${v#v1.}"
  local tmp
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/kube-apiserver-build.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'; trap - RETURN" RETURN

  log "building kube-apiserver $v with $(go version) (staging modules $staging_v)"
  log "this is a one-time build (several minutes on 2 cores); result cached at $APISERVER_BIN"
  local start end
  start=$(date +%s)

  # Read k8s.io/kubernetes's own go.mod to list its staging modules: they are
  # required as v0.0.0 and replaced by ./staging/src/..., which only works in
  # the kubernetes repo itself.  We replace each with its published version.
  local gomod
  gomod="$(cd "$tmp" && go list -m -f '{{.GoMod}}' "k8s.io/kubernetes@$v")"
  [ -s "$gomod" ] || die "could not fetch go.mod of k8s.io/kubernetes@$v"
  local staging
  staging="$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$gomod" | sort -u)"
  [ -n "$staging" ] || die "no staging modules found in $gomod"

  {
    echo "module local.invalid/kube-apiserver-build"
    echo
    echo "go 1.22.0"
    echo
    echo "require k8s.io/kubernetes $v"
    echo
    echo "replace ("
    local m
    for m in $staging; do
      echo "	$m => $m $staging_v"
    done
    echo ")"
  } >"$tmp/go.mod"

  local pkg=k8s.io/component-base/version
  local cpkg=k8s.io/client-go/pkg/version
  local major minor bdate
  major="${v#v}"; major="${major%%.*}"
  minor="${v#v*.}"; minor="${minor%%.*}"
  bdate="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local ldflags="-s -w"
  local p
  for p in "$pkg" "$cpkg"; do
    ldflags+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$bdate"
  done

  (cd "$tmp" && go build -trimpath -ldflags="$ldflags" \
    -o "$APISERVER_BIN.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
  "$APISERVER_BIN.tmp" --version >/dev/null
  mv -f "$APISERVER_BIN.tmp" "$APISERVER_BIN"

  end=$(date +%s)
  log "kube-apiserver $v built in $((end - start)) s"
}

if [ -x "$APISERVER_BIN" ] && "$APISERVER_BIN" --version >/dev/null 2>&1; then
  log "kube-apiserver $KUBE_APISERVER_VERSION already built ($APISERVER_BIN)"
else
  build_apiserver
fi
ln -sfn "$(basename "$APISERVER_BIN")" "$BIN_DIR/kube-apiserver"

# --------------------------------------------------------------------------
# kubectl: preinstalled, or from hack/install-helm.sh's cache bin dir.
# --------------------------------------------------------------------------
KUBECTL_BIN="$(PATH="$PATH:$BIN_DIR" command -v kubectl || true)"
if [ -z "$KUBECTL_BIN" ]; then
  script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  if [ -x "$script_dir/install-helm.sh" ]; then
    log "kubectl not found; running hack/install-helm.sh (it provides kubectl)"
    "$script_dir/install-helm.sh"
    KUBECTL_BIN="$(PATH="$PATH:$BIN_DIR" command -v kubectl || true)"
  fi
fi
[ -n "$KUBECTL_BIN" ] || die "kubectl not found (neither in PATH nor in $BIN_DIR)"

echo "etcd:           $ETCD_BIN ($("$ETCD_BIN" --version 2>/dev/null | head -1))"
echo "kube-apiserver: $APISERVER_BIN ($("$APISERVER_BIN" --version 2>/dev/null))"
echo "kubectl:        $KUBECTL_BIN ($("$KUBECTL_BIN" version --client 2>/dev/null | head -1))"
