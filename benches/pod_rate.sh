#!/usr/bin/env bash
# Pods created per second through a real API server, with the webhook called and not
# called, in one run (`make bench-node`): brings up the one-node cluster (hack/node.sh),
# installs the chart from the image `make image` built, runs benches/pod_rate.rs against it
# and always tears the node down. See docs/benchmarks.md.
#
# Needs root and `make tools image`. Only one node may run on the machine: the node's
# part waits its turn on a lock file (PIW_NODE_LOCK, default /tmp/piw-real-node.lock); the
# benchmark is compiled before that. Under two minutes with the lock held.
#
# Environment: PIW_POD_RATE_PODS (pods per mode, default 1000), PIW_POD_RATE_ROUNDS
# (rounds per mode, default 10), PIW_IMAGE_ARCHIVE (default target/image/pod-identity-webhook.tar).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
# shellcheck source=hack/tools.sh
. "$ROOT/hack/tools.sh"
export PATH="$PIW_TOOLS_BIN:$PATH"
IMAGE_ARCHIVE="${PIW_IMAGE_ARCHIVE:-$ROOT/target/image/pod-identity-webhook.tar}"
LOCK="${PIW_NODE_LOCK:-/tmp/piw-real-node.lock}"
RELEASE=piw
RELEASE_NS=piw-system

log() { printf '[pod-rate] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Run by hack/node.sh run, with the node's env (KUBECONFIG, NODE_DIR, ...) exported.
inside_node() {
  local work="$1"
  "$ROOT/hack/node.sh" load-image --dir "$NODE_DIR" "$IMAGE_ARCHIVE" >&2
  log "installing the chart (2 replicas, built-in certificates)"
  if ! HELM_CACHE_HOME="$work/helm/cache" HELM_CONFIG_HOME="$work/helm/config" \
    HELM_DATA_HOME="$work/helm/data" \
    helm install "$RELEASE" "$ROOT/charts/pod-identity-webhook" --namespace "$RELEASE_NS" \
      --create-namespace --set image.repository=pod-identity-webhook --wait --timeout 180s \
      >/dev/null; then
    kubectl -n "$RELEASE_NS" get pods -o wide >&2 || true
    kubectl -n "$RELEASE_NS" logs -l app.kubernetes.io/name=pod-identity-webhook --tail=20 >&2 || true
    die "the chart did not install"
  fi
  kubectl -n "$RELEASE_NS" get pods -o wide >&2
  cd "$ROOT"
  cargo bench --locked --bench pod_rate
}

case "${1:-}" in
  inside-node) inside_node "$2"; exit ;;
  "") ;;
  *) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

[ "$(id -u)" -eq 0 ] || die "the node (containerd, kubelet, a bridge) needs root"
for tool in kubectl helm kubelet kube-apiserver; do
  command -v "$tool" >/dev/null || die "$tool not found in $PIW_TOOLS_BIN: run make tools"
done
[ -f "$IMAGE_ARCHIVE" ] || die "$IMAGE_ARCHIVE not found: run make image"
log "image: $IMAGE_ARCHIVE, built $(date -r "$IMAGE_ARCHIVE" '+%F %T')"

cd "$ROOT"
cargo bench --locked --bench pod_rate --no-run

work="$(mktemp -d "${TMPDIR:-/tmp}/piw-pod-rate.XXXXXX")"
trap 'rm -rf "$work"' EXIT
log "waiting for the machine's node lock ($LOCK)"
# -o: the lock is held by flock itself, not by the daemons the node starts.
flock -o "$LOCK" "$ROOT/hack/node.sh" run --dir "$work/node" -- "${BASH_SOURCE[0]}" inside-node "$work"
