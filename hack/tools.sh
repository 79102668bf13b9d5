# Sourced by the hack/ scripts: where the project's tools live and which versions are pinned,
# stated once, and how a tool is built from its Go module. (Makefile and the Rust test
# harnesses compute the same directory.)
# shellcheck shell=bash disable=SC2034  # used by the scripts that source it

# The Kubernetes release the local cluster runs: kube-apiserver, kubelet,
# kube-controller-manager, kube-scheduler and kubectl, all built from k8s.io/kubernetes.
# KUBE_APISERVER_VERSION is the older name of the same knob and still wins when set.
KUBE_VERSION="${KUBE_APISERVER_VERSION:-${KUBE_VERSION:-v1.37.2}}"
KUBE_APISERVER_VERSION="$KUBE_VERSION"
# etcd, built from go.etcd.io/etcd/server/v3 (Debian's 3.4.23 is too old for 1.31+).
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
# Helm, both majors the chart supports: helm.sh/helm/v3 as `helm` (the oldest, which the tests
# and hack/render-deploy.sh use), helm.sh/helm/v4 as `helm4`.
HELM3_VERSION="${HELM3_VERSION:-v3.22.1}"
HELM4_VERSION="${HELM4_VERSION:-v4.3.2}"
# promtool, from the Prometheus module github.com/prometheus/prometheus, whose v0.X.Y is
# Prometheus 3.X.Y (v0.316.0 is Prometheus 3.16.0).
PROMETHEUS_MODULE_VERSION="${PROMETHEUS_MODULE_VERSION:-v0.316.0}"
PIW_CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/pod-identity-webhook"
PIW_TOOLS_BIN="$PIW_CACHE_DIR/bin"
# One directory per Kubernetes version holds its five binaries.
PIW_KUBE_DIR="$PIW_CACHE_DIR/kubernetes-$KUBE_VERSION"
PIW_ETCD_BIN="$PIW_CACHE_DIR/etcd-$ETCD_VERSION/etcd"
PIW_HELM3_BIN="$PIW_CACHE_DIR/helm-$HELM3_VERSION/helm"
PIW_HELM4_BIN="$PIW_CACHE_DIR/helm-$HELM4_VERSION/helm"
PIW_PROMETHEUS_DIR="$PIW_CACHE_DIR/prometheus-$PROMETHEUS_MODULE_VERSION"

# go_build_env: what every Go build here runs with: the local toolchain only, no cgo, modules
# resolved as go.mod says.
go_build_env() {
  export GOTOOLCHAIN=local
  export GOFLAGS="-mod=mod -buildvcs=false"
  export CGO_ENABLED=0
}

# new_module_dir: a throw-away module directory, removed when the build ends.
new_module_dir() {
  mktemp -d "${TMPDIR:-/tmp}/piw-go-build.XXXXXX"
}

# go_build_in DIR ARGS...: `go build ARGS` in the module DIR, with Go's build cache inside DIR
# (or in PIW_GO_BUILD_CACHE, for builds that share one) so it goes with it: the binaries are
# cached by version, and the gigabytes of compiled packages a build leaves would otherwise
# stay on the disk for nothing.
go_build_in() {
  local dir="$1"
  shift
  (cd "$dir" && GOCACHE="${PIW_GO_BUILD_CACHE:-$dir/go-build-cache}" go build "$@")
}
