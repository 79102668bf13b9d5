#!/usr/bin/env bash
# A real, local Kubernetes control plane (etcd + kube-apiserver) on loopback,
# for the real-cluster test suite and hack/node.sh, which adds a node.  No container engine, no
# kubelet, no kube-controller-manager: pods are stored and admitted (incl. by
# mutating webhooks) but never run.
#
# Install the binaries first with hack/install-control-plane.sh.
#
# Usage:
#   hack/control-plane.sh up [--dir DIR]
#       Start etcd + kube-apiserver in the background (they outlive this
#       script), wait for /readyz, write DIR/env and print it.  Without
#       --dir a fresh temporary directory is created.
#   hack/control-plane.sh down --dir DIR
#       Stop both processes and remove DIR.
#   hack/control-plane.sh run [--dir DIR] -- CMD [ARGS...]
#       up, run CMD with DIR/env exported, then ALWAYS down (on exit, failure,
#       Ctrl-C, TERM).  Exits with CMD's exit code.
#   hack/control-plane.sh restart-apiserver --dir DIR
#       Stop kube-apiserver only, start it again with the same flags on the
#       same port, wait for /readyz, update APISERVER_PID in DIR/env.
#       Graceful (SIGTERM) by default; with --kill it is SIGKILLed (crash).
#   hack/control-plane.sh create-namespace --dir DIR NAME...
#       Create namespaces the way a full cluster would have them: with the
#       `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap (there
#       is no kube-controller-manager to create them).  Idempotent.
#   hack/control-plane.sh free-ports N
#       Print N distinct free TCP ports on 127.0.0.1 (used by hack/demo.sh).
#   hack/control-plane.sh selftest
#       run a throw-away control plane and check it: readyz, a pod admitted
#       with its projected service-account token volume, TokenRequest,
#       restart-apiserver.  Prints "N passed, N failed".
#
# DIR/env is KEY=VALUE lines, loadable by a program or by a shell with
# `set -a; . DIR/env; set +a`:
#   CONTROL_PLANE_DIR KUBECONFIG KUBE_APISERVER_URL KUBE_CA_FILE
#   KUBE_ADMIN_CERT_FILE KUBE_ADMIN_KEY_FILE ETCD_URL ETCD_PID APISERVER_PID
#   SERVICE_ACCOUNT_ISSUER SERVICE_ACCOUNT_KEY_FILE
#   SERVICE_ACCOUNT_SIGNING_KEY_FILE
#
# Environment knobs:
#   KUBE_VERSION             which cached Kubernetes build to use (default v1.37.2;
#                            KUBE_APISERVER_VERSION is the older name)
#   KUBE_APISERVER_BIN       explicit kube-apiserver binary
#   ETCD_BIN                 explicit etcd binary (default: the cached build, hack/tools.sh)
#   CONTROL_PLANE_TIMEOUT    seconds to wait for readiness (default 60)
#   KUBE_APISERVER_EXTRA_ARGS extra kube-apiserver flags (word-split)
set -euo pipefail

# shellcheck source=hack/tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/tools.sh"
# shellcheck source=hack/daemons.sh
. "$(dirname "${BASH_SOURCE[0]}")/daemons.sh"
CACHE_BIN_DIR="$PIW_TOOLS_BIN"
TIMEOUT="${CONTROL_PLANE_TIMEOUT:-60}"
SA_ISSUER="https://kubernetes.default.svc.cluster.local"
MARKER=".pod-identity-webhook-control-plane"

log() { printf '[control-plane] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ binaries
find_etcd() {
  if [ -n "${ETCD_BIN:-}" ]; then echo "$ETCD_BIN"; return; fi
  if [ -x "$PIW_ETCD_BIN" ]; then echo "$PIW_ETCD_BIN"; return; fi
  command -v etcd || die "etcd not found: run hack/install-control-plane.sh"
}

find_apiserver() {
  if [ -n "${KUBE_APISERVER_BIN:-}" ]; then echo "$KUBE_APISERVER_BIN"; return; fi
  local c
  for c in "$PIW_KUBE_DIR/kube-apiserver" "$CACHE_BIN_DIR/kube-apiserver"; do
    if [ -x "$c" ]; then echo "$c"; return; fi
  done
  command -v kube-apiserver ||
    die "kube-apiserver not found: run hack/install-control-plane.sh"
}

find_kubectl() {
  if [ -x "$PIW_KUBE_DIR/kubectl" ]; then echo "$PIW_KUBE_DIR/kubectl"; return; fi
  PATH="$PATH:$CACHE_BIN_DIR" command -v kubectl ||
    die "kubectl not found (PATH or $CACHE_BIN_DIR): run hack/install-control-plane.sh"
}

curl_admin() {
  curl -sS --max-time 5 --cacert "$DIR/pki/ca.crt" \
    --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key" "$@"
}

# ---------------------------------------------------------------------- PKI
gen_pki() {
  local pki="$DIR/pki"
  mkdir -p "$pki"
  (
    cd "$pki"
    umask 077
    # Cluster CA: signs the serving cert and the client certs (like kubeadm's
    # single cluster CA).
    # Keys are ECDSA P-256 in PKCS#8 ("BEGIN PRIVATE KEY"), which every TLS
    # stack reads (Go, rustls, OpenSSL).
    genkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
    genkey ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 3650 \
      -subj "/CN=pod-identity-webhook-local-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -addext "subjectKeyIdentifier=hash" -out ca.crt 2>/dev/null

    sign() { # name subject extfile-content
      genkey "$1.key"
      openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
      printf '%s\n' "$3" "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -sha256 -days 3650 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    sign admin "/O=system:masters/CN=kubernetes-admin" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"

    # ServiceAccount token signing key (RS256, as in a real cluster).
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 0644 ca.crt apiserver.crt admin.crt sa.pub
  )
}

write_kubeconfig() {
  write_cert_kubeconfig "$DIR/kubeconfig" "$APISERVER_PORT" "$DIR/pki/ca.crt" \
    "$DIR/pki/admin.crt" "$DIR/pki/admin.key" admin
}

write_env() {
  local tmp="$DIR/env.tmp"
  {
    echo "CONTROL_PLANE_DIR=$DIR"
    echo "KUBECONFIG=$DIR/kubeconfig"
    echo "KUBE_APISERVER_URL=https://127.0.0.1:$APISERVER_PORT"
    echo "KUBE_CA_FILE=$DIR/pki/ca.crt"
    echo "KUBE_ADMIN_CERT_FILE=$DIR/pki/admin.crt"
    echo "KUBE_ADMIN_KEY_FILE=$DIR/pki/admin.key"
    echo "ETCD_URL=http://127.0.0.1:$ETCD_CLIENT_PORT"
    echo "ETCD_PID=$ETCD_PID"
    echo "APISERVER_PID=$APISERVER_PID"
    echo "SERVICE_ACCOUNT_ISSUER=$SA_ISSUER"
    echo "SERVICE_ACCOUNT_KEY_FILE=$DIR/pki/sa.pub"
    echo "SERVICE_ACCOUNT_SIGNING_KEY_FILE=$DIR/pki/sa.key"
  } >"$tmp"
  mv -f "$tmp" "$DIR/env"
}

# Internal state (ports, pids) lives in DIR/state, sourced by later commands.
write_state() {
  cat >"$DIR/state" <<EOF
ETCD_CLIENT_PORT=$ETCD_CLIENT_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
ETCD_PID=$ETCD_PID
APISERVER_PID=$APISERVER_PID
EOF
}

load_state() {
  [ -n "${DIR:-}" ] || die "--dir DIR is required"
  [ -f "$DIR/$MARKER" ] || die "$DIR is not a control-plane dir (no $MARKER)"
  # shellcheck disable=SC1091
  . "$DIR/state"
}

# ---------------------------------------------------------------- processes
start_etcd() {
  local etcd
  etcd="$(find_etcd)"
  local peer="http://127.0.0.1:$ETCD_PEER_PORT"
  local client="http://127.0.0.1:$ETCD_CLIENT_PORT"
  ETCD_PID="$(start_daemon "$DIR/etcd.log" "$DIR/etcd.pid" "$etcd" \
    --name local \
    --data-dir "$DIR/etcd-data" \
    --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "local=$peer" --initial-cluster-state new \
    --initial-cluster-token "pod-identity-webhook-local" \
    --logger zap --log-outputs stderr --log-level warn)"

  local deadline=$((SECONDS + TIMEOUT))
  until curl -sS --max-time 2 "$client/health" 2>/dev/null | grep -q '"health":"true"'; do
    if ! kill -0 "$ETCD_PID" 2>/dev/null; then
      tail -n 30 "$DIR/etcd.log" >&2 || true
      die "etcd exited during startup (log: $DIR/etcd.log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$DIR/etcd.log" >&2 || true
      die "etcd not healthy after ${TIMEOUT}s (log: $DIR/etcd.log)"
    fi
    sleep 0.1
  done
}

apiserver_args() {
  local pki="$DIR/pki"
  # shellcheck disable=SC2054 # commas are inside flag values
  APISERVER_ARGS=(
    --advertise-address=127.0.0.1
    --bind-address=127.0.0.1
    --secure-port="$APISERVER_PORT"
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT"
    --cert-dir="$pki"
    --tls-cert-file="$pki/apiserver.crt"
    --tls-private-key-file="$pki/apiserver.key"
    --client-ca-file="$pki/ca.crt"
    --authorization-mode=Node,RBAC
    --anonymous-auth=true
    --service-account-issuer="$SA_ISSUER"
    --service-account-key-file="$pki/sa.pub"
    --service-account-signing-key-file="$pki/sa.key"
    --api-audiences="$SA_ISSUER"
    --service-cluster-ip-range=10.0.0.0/24
    --enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,DefaultTolerationSeconds,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ResourceQuota,NodeRestriction,Priority
    --allow-privileged=true
    # The `kubernetes` Service endpoint would be 127.0.0.1, which Endpoints
    # validation rejects (loopback): do not reconcile it.
    --endpoint-reconciler-type=none
    # On SIGTERM, stop the HTTP server 2 s after in-flight requests drained
    # instead of waiting up to --request-timeout (60 s) for open watches:
    # keeps restart-apiserver and down fast while clients have watches open.
    --shutdown-send-retry-after=true
    --profiling=false
    --enable-bootstrap-token-auth=false
    --event-ttl=10m
  )
  # shellcheck disable=SC2206
  [ -z "${KUBE_APISERVER_EXTRA_ARGS:-}" ] || APISERVER_ARGS+=($KUBE_APISERVER_EXTRA_ARGS)
}

start_apiserver() {
  local apiserver attempt
  apiserver="$(find_apiserver)"
  # Its port can still be held for a moment after a kill (seen under load on the real node:
  # "bind: address already in use"): then it is started again, a few times.
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    echo "=== $(date -u +%FT%TZ) starting $apiserver" >>"$DIR/kube-apiserver.log"
    APISERVER_PID="$(start_daemon "$DIR/kube-apiserver.log" "$DIR/kube-apiserver.pid" \
      "$apiserver" "${APISERVER_ARGS[@]}")"
    wait_apiserver_ready "$attempt" && return 0
    log "port $APISERVER_PORT still in use (attempt $attempt); starting kube-apiserver again"
    sleep 1
  done
}

# Returns 1 when the API server exited because its port was still taken (and ATTEMPT < 10);
# any other failure ends the script with a report.
wait_apiserver_ready() {
  local attempt="${1:-10}" url="https://127.0.0.1:$APISERVER_PORT"
  local deadline=$((SECONDS + TIMEOUT)) out=""
  while :; do
    out="$(curl_admin "$url/readyz" 2>/dev/null || true)"
    [ "$out" = "ok" ] && break
    if ! kill -0 "$APISERVER_PID" 2>/dev/null; then
      if [ "$attempt" -lt 10 ] &&
        grep -q "address already in use" < <(tail -n 5 "$DIR/kube-apiserver.log"); then
        { echo "--- who holds port $APISERVER_PORT"; ss -tanp 2>/dev/null | grep ":$APISERVER_PORT " || true; } \
          >>"$DIR/kube-apiserver.log"
        return 1
      fi
      log "kube-apiserver exited during startup"
      apiserver_failure_report
      die "kube-apiserver failed (log: $DIR/kube-apiserver.log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "kube-apiserver not ready after ${TIMEOUT}s"
      apiserver_failure_report
      die "kube-apiserver not ready (log: $DIR/kube-apiserver.log)"
    fi
    sleep 0.2
  done
}

apiserver_failure_report() {
  {
    echo "--- /readyz?verbose"
    curl_admin "https://127.0.0.1:$APISERVER_PORT/readyz?verbose" 2>&1 || true
    echo "--- tail $DIR/etcd.log"
    tail -n 30 "$DIR/etcd.log" 2>/dev/null || true
    echo "--- tail $DIR/kube-apiserver.log"
    tail -n 60 "$DIR/kube-apiserver.log" 2>/dev/null || true
  } >&2
}

# ------------------------------------------------------ namespaces / objects
create_namespaces() {
  local kubectl ns manifest="" ca_indented _
  kubectl="$(find_kubectl)"
  ca_indented="$(sed 's/^/    /' "$DIR/pki/ca.crt")"
  for ns in "$@"; do
    manifest+="---
apiVersion: v1
kind: Namespace
metadata:
  name: $ns
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: default
  namespace: $ns
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: kube-root-ca.crt
  namespace: $ns
data:
  ca.crt: |
$ca_indented
"
  done
  # Retry: the apiserver's own system-namespace controller may be creating
  # kube-system & co. at the same moment (AlreadyExists on first try).
  for _ in 1 2 3 4 5; do
    if printf '%s' "$manifest" |
      KUBECONFIG="$DIR/kubeconfig" "$kubectl" apply -f - >/dev/null 2>"$DIR/.apply.err"; then
      rm -f "$DIR/.apply.err"
      return 0
    fi
    sleep 0.5
  done
  cat "$DIR/.apply.err" >&2
  die "could not create namespaces: $*"
}

# ----------------------------------------------------------------- commands
cmd_up() {
  if [ -z "${DIR:-}" ]; then
    DIR="$(mktemp -d "${TMPDIR:-/tmp}/pod-identity-cp.XXXXXX")"
  else
    mkdir -p "$DIR"
    DIR="$(cd "$DIR" && pwd -P)"
    if [ -f "$DIR/state" ]; then
      # shellcheck disable=SC1091
      . "$DIR/state"
      if pid_is_ours "${ETCD_PID:-}" "$DIR" || pid_is_ours "${APISERVER_PID:-}" "$DIR"; then
        die "a control plane is already running in $DIR (use down first)"
      fi
    fi
    rm -rf "${DIR:?}/etcd-data" "$DIR/pki" "$DIR/env" "$DIR/state" "$DIR"/*.pid
  fi
  touch "$DIR/$MARKER"
  local start=$SECONDS
  # On failure: stop whatever was started, keep DIR (logs) for inspection.
  trap 'rc=$?; trap - EXIT; if [ "$rc" -ne 0 ]; then stop_all; [ -n "${IN_RUN:-}" ] || log "up failed; logs kept in $DIR"; fi; exit "$rc"' EXIT
  find_etcd >/dev/null
  find_apiserver >/dev/null

  gen_pki
  read -r ETCD_CLIENT_PORT ETCD_PEER_PORT APISERVER_PORT <<<"$(free_ports 3)"
  ETCD_PID="" APISERVER_PID=""
  write_state
  start_etcd
  write_state
  apiserver_args
  start_apiserver
  write_state
  write_kubeconfig
  # No kube-controller-manager: give the bootstrap namespaces the objects its
  # controllers would create (default SA, kube-root-ca.crt).
  create_namespaces default kube-system kube-public
  write_env
  trap - EXIT
  log "control plane ready in $((SECONDS - start)) s: https://127.0.0.1:$APISERVER_PORT (dir $DIR)"
  cat "$DIR/env"
}

# The pid files are written by the daemons' launcher itself, so they are
# right even when `up` failed half-way.
stop_all() {
  local f
  f="$DIR/kube-apiserver.pid"
  [ ! -s "$f" ] || stop_pid "$(cat "$f")" "$DIR" kube-apiserver
  f="$DIR/etcd.pid"
  [ ! -s "$f" ] || stop_pid "$(cat "$f")" "$DIR" etcd
}

cmd_down() {
  [ -n "${DIR:-}" ] || die "--dir DIR is required"
  [ -d "$DIR" ] || { log "$DIR does not exist: nothing to do"; return 0; }
  [ -f "$DIR/$MARKER" ] || die "$DIR is not a control-plane dir (no $MARKER)"
  stop_all
  rm -rf "${DIR:?}"
  log "control plane in $DIR stopped and removed"
}

cmd_restart_apiserver() {
  load_state
  local start=$SECONDS
  [ ! -s "$DIR/kube-apiserver.pid" ] ||
    stop_pid "$(cat "$DIR/kube-apiserver.pid")" "$DIR" kube-apiserver "$STOP_SIGNAL"
  apiserver_args
  start_apiserver
  write_state
  write_env
  log "kube-apiserver restarted in $((SECONDS - start)) s (pid $APISERVER_PID, port $APISERVER_PORT)"
}

cmd_run() {
  [ "$#" -gt 0 ] || die "run: missing command after --"
  local created_dir=""
  [ -n "${DIR:-}" ] || created_dir=1
  # shellcheck disable=SC2317 # invoked by trap
  teardown() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "${DIR:-}" ] && [ -f "$DIR/$MARKER" ]; then
      (cmd_down) || true
    fi
    exit "$rc"
  }
  trap teardown EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  # up in a subshell so its `die` exits only the subshell, then read env.
  if [ -n "$created_dir" ]; then
    DIR="$(mktemp -d "${TMPDIR:-/tmp}/pod-identity-cp.XXXXXX")"
  fi
  (IN_RUN=1; cmd_up >/dev/null) || exit 1
  set -a
  # shellcheck disable=SC1091
  . "$DIR/env"
  set +a
  cat "$DIR/env" >&2
  local rc=0
  "$@" || rc=$?
  exit "$rc"
}

# Runs inside `run` (env exported).
# shellcheck disable=SC2016 # the sh -c scripts get their values as $1, $2
cmd_selftest_inner() {
  local kubectl ns="selftest"
  kubectl="$(find_kubectl)"
  check "readyz" sh -c '"$1" get --raw /readyz | grep -qx ok' _ "$kubectl"
  check "create-namespace" "${BASH_SOURCE[0]}" create-namespace --dir "$CONTROL_PLANE_DIR" "$ns"
  check "create serviceaccount" "$kubectl" -n "$ns" create serviceaccount app
  check "apply pod" sh -c 'printf "%s\n" "apiVersion: v1" "kind: Pod" \
    "metadata: {name: p1, namespace: $2}" \
    "spec: {serviceAccountName: app, containers: [{name: c, image: busybox}]}" |
    "$1" apply -f -' _ "$kubectl" "$ns"
  check "pod has projected SA token volume" sh -c '"$1" -n "$2" get pod p1 \
    -o jsonpath="{.spec.volumes[*].projected.sources[*].serviceAccountToken.path}" | grep -qx token' \
    _ "$kubectl" "$ns"
  check "pod without its SA is rejected" sh -c '"$1" -n "$2" run p2 --image=busybox \
    --overrides="{\"spec\":{\"serviceAccountName\":\"missing\"}}" 2>&1 |
    grep -q "serviceaccount \"missing\" not found"' _ "$kubectl" "$ns"
  check "TokenRequest (kubectl create token)" sh -c '"$1" -n "$2" create token app \
    --audience sts.amazonaws.com | grep -q "^ey"' _ "$kubectl" "$ns"
  check "restart-apiserver" "${BASH_SOURCE[0]}" restart-apiserver --dir "$CONTROL_PLANE_DIR"
  check "readyz after restart, data kept" sh -c '"$1" get --raw /readyz | grep -qx ok &&
    "$1" -n "$2" get pod p1 -o name' _ "$kubectl" "$ns"
  check_summary
}

# --------------------------------------------------------------------- main
[ "$#" -gt 0 ] || usage
CMD="$1"
shift
DIR=""
NAMES=()
STOP_SIGNAL=TERM
while [ "$#" -gt 0 ]; do
  case "$1" in
    --dir) [ "$#" -ge 2 ] || die "--dir needs a value"; DIR="$2"; shift 2 ;;
    --dir=*) DIR="${1#--dir=}"; shift ;;
    --) shift; break ;;
    --kill) STOP_SIGNAL=KILL; shift ;;
    -h|--help) usage ;;
    *)
      if [ "$CMD" = create-namespace ] || [ "$CMD" = free-ports ]; then NAMES+=("$1"); shift
      else die "unknown argument: $1"; fi ;;
  esac
done
if [ -n "$DIR" ] && [ -d "$DIR" ]; then DIR="$(cd "$DIR" && pwd -P)"; fi

case "$CMD" in
  up) cmd_up ;;
  down) cmd_down ;;
  run) cmd_run "$@" ;;
  restart-apiserver) cmd_restart_apiserver ;;
  create-namespace)
    load_state
    [ "${#NAMES[@]}" -gt 0 ] || die "create-namespace: no names given"
    create_namespaces "${NAMES[@]}"
    log "namespaces ready: ${NAMES[*]}"
    ;;
  free-ports) free_ports "${NAMES[0]:-1}" ;;
  selftest) exec "${BASH_SOURCE[0]}" run -- "${BASH_SOURCE[0]}" _selftest-inner ;;
  _selftest-inner) cmd_selftest_inner ;;
  -h|--help|help) usage ;;
  *) die "unknown command: $CMD" ;;
esac
