# Sourced by the hack/ scripts: where the project's tools live and which versions are pinned,
# stated once. (Makefile and the Rust test harnesses compute the same directory.)
# shellcheck shell=bash disable=SC2034  # used by the scripts that source it

# The Kubernetes release the local cluster runs: kube-apiserver, kubelet,
# kube-controller-manager, kube-scheduler and kubectl, all built from k8s.io/kubernetes.
# KUBE_APISERVER_VERSION is the older name of the same knob and still wins when set.
KUBE_VERSION="${KUBE_APISERVER_VERSION:-${KUBE_VERSION:-v1.37.2}}"
KUBE_APISERVER_VERSION="$KUBE_VERSION"
# etcd, built from go.etcd.io/etcd/server/v3 (Debian's 3.4.23 is too old for 1.31+).
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
PIW_CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/pod-identity-webhook"
PIW_TOOLS_BIN="$PIW_CACHE_DIR/bin"
# One directory per Kubernetes version holds its five binaries.
PIW_KUBE_DIR="$PIW_CACHE_DIR/kubernetes-$KUBE_VERSION"
PIW_ETCD_BIN="$PIW_CACHE_DIR/etcd-$ETCD_VERSION/etcd"
