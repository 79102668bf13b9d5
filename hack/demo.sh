#!/usr/bin/env bash
# The README's "run it" command: build the webhook's image, start a real one-node cluster on
# this machine (hack/node.sh: kube-apiserver, controller-manager, scheduler, containerd and
# a kubelet; no Docker), install the chart from that image, create the annotated
# ServiceAccount of examples/ and a pod under it, and show from inside the running pod what
# the webhook injected and what its token says.
#
# Usage:
#   hack/demo.sh            run the demo and leave the cluster up for exploring
#   hack/demo.sh --down     run the demo, then tear everything down (also DEMO_TEARDOWN=1)
#   hack/demo.sh down       stop a demo left running and undo everything it changed
#
# Needs root (containerd, the kubelet and the pod bridge). Environment:
#   DEMO_DIR        where the demo keeps its state (default ${TMPDIR:-/tmp}/pod-identity-webhook-demo)
#   DEMO_TEARDOWN=1 same as --down
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
DEMO_DIR="${DEMO_DIR:-${TMPDIR:-/tmp}/pod-identity-webhook-demo}"
TEARDOWN="${DEMO_TEARDOWN:-0}"
RELEASE=pod-identity-webhook
RELEASE_NS=pod-identity-webhook
NODE_DIR="$DEMO_DIR/node"
# shellcheck source=hack/tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/tools.sh"
export PATH="$PIW_TOOLS_BIN:$PATH"

# Bold headings only for a person at a terminal.
if [ -t 2 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD="" PLAIN=""; fi
step() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$PLAIN" >&2; }
log() { printf '%s\n' "$*" >&2; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

cmd_down() {
  if [ -f "$NODE_DIR/.pod-identity-webhook-node" ]; then
    "$ROOT/hack/node.sh" down --dir "$NODE_DIR" || true
    rm -rf "$DEMO_DIR"
    log "demo stopped; every change undone and $DEMO_DIR removed"
  elif [ -e "$DEMO_DIR" ]; then
    rm -rf "$DEMO_DIR"
    log "no demo cluster was running; removed the leftover $DEMO_DIR"
  else
    log "no demo is running (nothing in $DEMO_DIR): nothing to stop"
  fi
}

# --down: always tear down at the end. Otherwise only on failure, after showing why.
on_exit() {
  local rc=$?
  trap - EXIT
  if [ "$TEARDOWN" = 1 ]; then
    step "Tearing down (--down)"
    cmd_down
  elif [ "$rc" -ne 0 ]; then
    if [ -f "$NODE_DIR/env" ]; then
      log "--- webhook logs:"
      kubectl -n "$RELEASE_NS" logs -l app.kubernetes.io/name=pod-identity-webhook --tail=20 >&2 || true
    fi
    log "demo failed; cleaning up"
    cmd_down
  fi
  exit "$rc"
}

# The demo's pod: runs as the annotated ServiceAccount of examples/ and stays up.
demo_pod() {
  cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: s3-reader
  namespace: default
spec:
  serviceAccountName: s3-reader
  terminationGracePeriodSeconds: 0
  containers:
    - name: app
      image: $TEST_IMAGE
      command: ["sleep", "3600"]
      env:
        - name: LOG_LEVEL
          value: info
EOF
}

cmd_up() {
  local started=$SECONDS
  cd "$ROOT"
  [ "$(id -u)" -eq 0 ] || die "the demo runs a real node (containerd, kubelet, a bridge): run it as root"
  if [ -e "$DEMO_DIR" ]; then
    step "A demo is already set up in $DEMO_DIR: stopping it first"
    cmd_down
  fi
  trap on_exit EXIT

  step "Installing tools (helm, etcd and Kubernetes $KUBE_VERSION built from source; containerd): cached after the first run"
  # The demo needs one helm; make tools builds Helm 4 too, for the chart tests.
  PIW_SKIP_HELM4=1 "$ROOT/hack/install-helm.sh" >/dev/null
  "$ROOT/hack/install-control-plane.sh" >/dev/null
  "$ROOT/hack/install-node.sh"

  step "Building the webhook's image (make image)"
  local archive
  archive="$("$ROOT/hack/build-image.sh")"

  step "Starting a one-node cluster on this machine (hack/node.sh up)"
  mkdir -p "$DEMO_DIR"
  "$ROOT/hack/node.sh" up --dir "$NODE_DIR" >/dev/null
  "$ROOT/hack/node.sh" load-image --dir "$NODE_DIR" "$archive"
  set -a
  # shellcheck disable=SC1091
  . "$NODE_DIR/env"
  set +a
  kubectl get nodes -o wide >&2

  step "helm install: the chart with its defaults, from that image"
  helm install "$RELEASE" "$ROOT/charts/pod-identity-webhook" --namespace "$RELEASE_NS" \
    --create-namespace --set image.repository=pod-identity-webhook --wait --timeout 180s >/dev/null
  kubectl -n "$RELEASE_NS" get pods -o wide >&2

  step "Applying examples/serviceaccount.yaml and a pod under it"
  sed -n 's/^    eks.amazonaws.com/  eks.amazonaws.com/p' "$ROOT/examples/serviceaccount.yaml" >&2
  kubectl apply -f "$ROOT/examples/serviceaccount.yaml" >&2
  demo_pod | kubectl apply -f - >&2
  kubectl wait --for=condition=Ready pod/s3-reader --timeout=120s >/dev/null

  step "Inside the running pod: its environment (* = injected by the webhook)"
  local own injected
  own="$(demo_pod | awk '/- name:/ && prev ~ /env:/ {print $3} {prev = $0}')"
  injected="$(kubectl get pod s3-reader -o jsonpath='{range .spec.containers[0].env[*]}{.name}{"\n"}{end}' |
    grep -vxF "$own")"
  kubectl exec s3-reader -- env | sort | while IFS= read -r line; do
    if grep -qxF "${line%%=*}" <<<"$injected"; then printf '  * %s\n' "$line"
    elif [ "${line%%=*}" = LOG_LEVEL ]; then printf '    %s   (the pod'"'"'s own)\n' "$line"
    fi
  done

  step "Inside the running pod: the token file and its claims"
  local token_file token
  # shellcheck disable=SC2016 # expanded inside the pod
  token_file="$(kubectl exec s3-reader -- sh -c 'echo "$AWS_WEB_IDENTITY_TOKEN_FILE"')"
  kubectl exec s3-reader -- ls -lL "$token_file" | sed 's/^/  /'
  token="$(kubectl exec s3-reader -- cat "$token_file")"
  python3 - "$token" <<'EOF'
import base64, json, sys
payload = sys.argv[1].split(".")[1]
claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
for key in ("iss", "sub", "aud"):
    print(f"  {key}: {claims[key]}")
print(f"  lifetime (exp - iat): {claims['exp'] - claims['iat']} s")
EOF

  log ""
  log "Demo ready in $((SECONDS - started)) s."
  if [ "$TEARDOWN" != 1 ]; then
    trap - EXIT
    cat <<EOF

The cluster keeps running. Explore:
  export KUBECONFIG=$KUBECONFIG PATH=$PIW_TOOLS_BIN:\$PATH
  kubectl get pod s3-reader -o yaml
  kubectl -n $RELEASE_NS logs -l app.kubernetes.io/name=pod-identity-webhook
Stop everything: make demo-down   (or: hack/demo.sh down)
EOF
  fi
}

case "${1:-}" in
  down) cmd_down ;;
  --down) TEARDOWN=1; cmd_up ;;
  "") cmd_up ;;
  -h|--help|help) usage ;;
  *) usage ;;
esac
