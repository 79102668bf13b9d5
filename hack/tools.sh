# Sourced by the hack/ scripts: where the project's tools live and which kube-apiserver is
# pinned, stated once. (Makefile and the Rust test harnesses compute the same directory.)
# shellcheck shell=bash disable=SC2034  # used by the scripts that source it

# Debian's etcd is 3.4.23; kube-apiserver 1.31+ needs etcd health endpoints from 3.4.29.
KUBE_APISERVER_VERSION="${KUBE_APISERVER_VERSION:-v1.30.14}"
PIW_CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/pod-identity-webhook"
PIW_TOOLS_BIN="$PIW_CACHE_DIR/bin"
