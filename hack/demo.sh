#!/usr/bin/env bash
# The README's "run it" command: build the webhook, start a local Kubernetes control plane
# (etcd + kube-apiserver on loopback, no containers), install the chart in URL mode, run the
# webhook as a local process with the chart's ServiceAccount, create the annotated
# ServiceAccount and pod from examples/, and print what the webhook injected into the pod
# the API server stored.
#
# Usage:
#   hack/demo.sh            run the demo and leave the cluster up for exploring
#   hack/demo.sh --down     run the demo, then tear everything down (also DEMO_TEARDOWN=1)
#   hack/demo.sh down       stop a demo left running and remove its files
#
# Environment:
#   DEMO_DIR        where the demo keeps its state (default ${TMPDIR:-/tmp}/pod-identity-webhook-demo)
#   DEMO_PROFILE    cargo profile of the webhook build: dev (default) or release
#   DEMO_TEARDOWN=1 same as --down
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
DEMO_DIR="${DEMO_DIR:-${TMPDIR:-/tmp}/pod-identity-webhook-demo}"
PROFILE="${DEMO_PROFILE:-dev}"
TEARDOWN="${DEMO_TEARDOWN:-0}"
RELEASE=pod-identity-webhook
RELEASE_NS=pod-identity-webhook
# shellcheck source=hack/tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/tools.sh"
CACHE_BIN_DIR="$PIW_TOOLS_BIN"
export PATH="$PATH:$CACHE_BIN_DIR"

CLUSTER_DIR="$DEMO_DIR/cluster"
WEBHOOK_DIR="$DEMO_DIR/webhook"

# Bold headings only for a person at a terminal.
if [ -t 2 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD="" PLAIN=""; fi
step() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$PLAIN" >&2; }
log() { printf '%s\n' "$*" >&2; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

# Is the webhook pid in WEBHOOK_DIR/webhook.pid alive and ours?
webhook_pid() {
  local pid
  pid="$(cat "$WEBHOOK_DIR/webhook.pid" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$WEBHOOK_DIR" || return 1
  echo "$pid"
}

cmd_down() {
  local pid _
  if pid="$(webhook_pid)"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    log "webhook (pid $pid) stopped"
  fi
  if [ -f "$CLUSTER_DIR/.pod-identity-webhook-control-plane" ]; then
    "$ROOT/hack/control-plane.sh" down --dir "$CLUSTER_DIR" || true
  fi
  rm -rf "$DEMO_DIR"
  log "demo stopped; $DEMO_DIR removed"
}


make_certs() {
  local dir="$1"
  mkdir -p "$dir"
  (
    cd "$dir"
    umask 077
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
    openssl req -x509 -new -key ca.key -sha256 -days 30 -subj "/CN=pod-identity-webhook demo CA" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt 2>/dev/null
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out tls.key 2>/dev/null
    openssl req -new -key tls.key -subj "/CN=127.0.0.1" -out tls.csr 2>/dev/null
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >tls.ext
    openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 30 \
      -extfile tls.ext -out tls.crt 2>/dev/null
    rm -f tls.csr tls.ext
    chmod 0644 ca.crt tls.crt
  )
}

# --down: always tear down at the end. Otherwise only on failure, after showing why.
on_exit() {
  local rc=$?
  trap - EXIT
  if [ "$TEARDOWN" = 1 ]; then
    step "Tearing down (--down)"
    cmd_down
  elif [ "$rc" -ne 0 ]; then
    if [ -f "$WEBHOOK_DIR/webhook.log" ]; then
      log "--- webhook log:"
      tail -n 30 "$WEBHOOK_DIR/webhook.log" >&2
    fi
    log "demo failed; cleaning up"
    cmd_down
  fi
  exit "$rc"
}

cmd_up() {
  local started=$SECONDS
  cd "$ROOT"
  if [ -e "$DEMO_DIR" ]; then
    step "A demo is already set up in $DEMO_DIR: stopping it first"
    cmd_down
  fi
  trap on_exit EXIT

  step "Building the webhook (cargo profile $PROFILE)"
  cargo build --locked --profile "$PROFILE" --bin pod-identity-webhook
  local target_dir binary
  target_dir="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
  if [ "$PROFILE" = dev ]; then binary="$target_dir/debug/pod-identity-webhook"
  else binary="$target_dir/$PROFILE/pod-identity-webhook"; fi
  [ -x "$binary" ] || die "no binary at $binary"

  step "Installing tools (helm, etcd, kube-apiserver; cached after the first run)"
  "$ROOT/hack/install-helm.sh" >/dev/null
  "$ROOT/hack/install-control-plane.sh" >/dev/null
  local helm=""
  helm="$(command -v helm)" || die "helm not found after hack/install-helm.sh"
  command -v kubectl >/dev/null || die "kubectl not found after hack/install-control-plane.sh"

  step "Starting the local control plane (etcd + kube-apiserver on 127.0.0.1)"
  mkdir -p "$DEMO_DIR" "$WEBHOOK_DIR"
  "$ROOT/hack/control-plane.sh" up --dir "$CLUSTER_DIR" >/dev/null
  set -a
  # shellcheck disable=SC1091
  . "$CLUSTER_DIR/env"
  set +a
  "$ROOT/hack/control-plane.sh" create-namespace --dir "$CLUSTER_DIR" "$RELEASE_NS"

  step "Making the webhook's serving certificate (a demo CA, for 127.0.0.1)"
  make_certs "$WEBHOOK_DIR/certs"
  local port metrics_port
  read -r port metrics_port <<<"$("$ROOT/hack/control-plane.sh" free-ports 2)"

  step "Installing the chart in URL mode: the API server calls https://127.0.0.1:$port/mutate"
  "$helm" install "$RELEASE" "$ROOT/charts/pod-identity-webhook" --namespace "$RELEASE_NS" \
    --set "webhook.url=https://127.0.0.1:$port/mutate" \
    --set "webhook.caBundle=$(base64 -w0 <"$WEBHOOK_DIR/certs/ca.crt")" >/dev/null
  kubectl get mutatingwebhookconfiguration "$RELEASE" \
    -o jsonpath='  webhook configuration {.metadata.name}: {.webhooks[0].clientConfig.url}, failurePolicy {.webhooks[0].failurePolicy}, reinvocationPolicy {.webhooks[0].reinvocationPolicy}{"\n"}' >&2

  step "Starting the webhook as a local process, with the chart's ServiceAccount token"
  local token
  token="$(kubectl create token "$RELEASE" -n "$RELEASE_NS" --duration=24h)"
  cat >"$WEBHOOK_DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: $KUBE_APISERVER_URL
    certificate-authority-data: $(base64 -w0 <"$KUBE_CA_FILE")
users:
- name: $RELEASE
  user:
    token: $token
contexts:
- name: local
  context: {cluster: local, user: $RELEASE, namespace: $RELEASE_NS}
current-context: local
EOF
  chmod 0600 "$WEBHOOK_DIR/kubeconfig"
  # Its own session: it keeps running after this script, until `hack/demo.sh down`.
  env -u HTTPS_PROXY -u https_proxy -u HTTP_PROXY -u http_proxy \
    setsid "$binary" serve --bind-address=127.0.0.1 --port="$port" --metrics-port="$metrics_port" \
    --tls-cert="$WEBHOOK_DIR/certs/tls.crt" --tls-key="$WEBHOOK_DIR/certs/tls.key" \
    --kubeconfig="$WEBHOOK_DIR/kubeconfig" --namespace="$RELEASE_NS" \
    </dev/null >>"$WEBHOOK_DIR/webhook.log" 2>&1 &
  echo $! >"$WEBHOOK_DIR/webhook.pid"
  local deadline=$((SECONDS + 60))
  until [ "$(curl -s --max-time 2 "http://127.0.0.1:$metrics_port/readyz" || true)" = ok ]; do
    webhook_pid >/dev/null || die "the webhook exited (log: $WEBHOOK_DIR/webhook.log)"
    [ "$SECONDS" -lt "$deadline" ] || die "the webhook is not ready after 60 s (log: $WEBHOOK_DIR/webhook.log)"
    sleep 0.2
  done
  log "  ready: https://127.0.0.1:$port/mutate, metrics http://127.0.0.1:$metrics_port/metrics"

  step "Applying examples/: an annotated ServiceAccount and a pod"
  sed -n 's/^    eks.amazonaws.com/  eks.amazonaws.com/p' "$ROOT/examples/serviceaccount.yaml" >&2
  kubectl apply -f "$ROOT/examples/serviceaccount.yaml" -f "$ROOT/examples/pod.yaml" >&2

  step "What the API server stored (pod default/s3-reader; pods stay Pending: there is no kubelet)"
  log "Environment injected, per container:"
  kubectl get pod s3-reader -n default -o jsonpath='{range .spec.containers[*]}  {.name}:{"\n"}{range .env[*]}    {.name}={.value}{"\n"}{end}{end}'
  log "Token volume:"
  kubectl get pod s3-reader -n default -o jsonpath='{.spec.volumes[?(@.name=="aws-iam-token")]}' |
    python3 -m json.tool | sed 's/^/  /'
  log "Mounts of it:"
  kubectl get pod s3-reader -n default -o jsonpath='{range .spec.containers[*]}  {.name}: {range .volumeMounts[?(@.name=="aws-iam-token")]}{.mountPath} (readOnly: {.readOnly}){end}{"\n"}{end}'

  log ""
  log "Demo ready in $((SECONDS - started)) s."
  if [ "$TEARDOWN" != 1 ]; then
    trap - EXIT
    cat <<EOF

The cluster and the webhook keep running. Explore:
  export KUBECONFIG=$CLUSTER_DIR/kubeconfig
  kubectl get pod s3-reader -o yaml
  kubectl create serviceaccount other && kubectl annotate serviceaccount other eks.amazonaws.com/role-arn=arn:aws:iam::111122223333:role/other
  kubectl run p --image=busybox --overrides='{"spec":{"serviceAccountName":"other"}}' && kubectl get pod p -o jsonpath='{.spec.containers[0].env}'
Webhook log: $WEBHOOK_DIR/webhook.log   metrics: curl http://127.0.0.1:$metrics_port/metrics
Stop everything: hack/demo.sh down   (or: make demo-down)
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
