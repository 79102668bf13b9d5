#!/usr/bin/env bash
# Installs what hack/node.sh needs besides the Go-built binaries of
# hack/install-control-plane.sh: Debian's containerd, runc, CNI plugins, buildah (images
# without a Docker engine), iptables, iproute2, busybox-static (the pause and test images)
# and libcap2-bin (setcap, for the webhook image). Idempotent; needs root or sudo.
set -euo pipefail

log() { printf '[install-node] %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then command -v sudo >/dev/null 2>&1 && SUDO="sudo"; fi

pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || [ -x "$1" ] || pkgs+=("$2"); }
need containerd containerd
need runc runc
need /usr/lib/cni/bridge containernetworking-plugins
need buildah buildah
need iptables iptables
need ip iproute2
need busybox busybox-static
need setcap libcap2-bin
need openssl openssl
need curl curl
if [ "${#pkgs[@]}" -gt 0 ]; then
  log "installing Debian packages: ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The packaged containerd service must not start: hack/node.sh runs its own.
  created_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 0755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  trap '[ -z "$created_policy" ] || $SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
log "containerd $(containerd --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}'), buildah $(buildah --version | awk '{print $3}')"
