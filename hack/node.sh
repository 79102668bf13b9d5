#!/usr/bin/env bash
# A real one-node Kubernetes cluster on this machine, without Docker or kind: etcd,
# kube-apiserver (hack/control-plane.sh), kube-controller-manager, kube-scheduler,
# containerd and a kubelet, with a pod network on a bridge of its own. Pods really run.
#
# Install the binaries first: hack/install-control-plane.sh (Go builds, cached by version)
# and hack/install-node.sh (Debian's containerd, runc, CNI plugins, buildah, iptables).
# Needs root. One node per machine at a time.
#
# Usage:
#   hack/node.sh up [--dir DIR]            start everything, wait until the node is Ready,
#                                          import the pause and test images, write DIR/env
#   hack/node.sh down --dir DIR            stop everything and undo every change (below)
#   hack/node.sh run [--dir DIR] -- CMD..  up, run CMD with DIR/env exported, always down
#   hack/node.sh load-image --dir DIR FILE...
#                                          import image archives (docker-archive or OCI), e.g.
#                                          target/image/pod-identity-webhook.tar (`make image`)
#   hack/node.sh restart-apiserver --dir DIR [--kill]
#                                          restart kube-apiserver with the same flags and port
#   hack/node.sh selftest                  a throw-away node: a pod runs, reads the API
#                                          through the kubernetes Service, logs and exec work
#
# DIR/env (KEY=VALUE, `set -a; . DIR/env; set +a`) has everything hack/control-plane.sh
# writes (KUBECONFIG, KUBE_APISERVER_URL, SERVICE_ACCOUNT_ISSUER, ...) plus NODE_DIR,
# NODE_NAME, NODE_IP, POD_SUBNET, SERVICE_CIDR, CONTAINERD_ADDRESS, KUBE_VERSION, and
# TEST_IMAGE (a busybox image with sh, already imported).
#
# What it changes on the machine, all undone by `down` (and by `run` on exit, failure,
# Ctrl-C): a bridge piw-br0 holding NODE_IP; `unreachable` routes for the service range and
# the rest of the pod range, so a misrouted packet fails at once instead of leaving through
# the machine's interface; a nat chain PIW-NODE that sends the `kubernetes` Service address
# to the loopback kube-apiserver (route_localnet on the bridge only); the sysctls the kubelet
# sets (vm.overcommit_memory, vm.panic_on_oom, kernel.panic, kernel.panic_on_oops,
# kernel.keys.root_maxkeys, kernel.keys.root_maxbytes); the kubepods cgroups; network
# namespaces, CNI results and /var/log/containers links of its pods, and the directories
# containerd and the kubelet create at fixed places when they were not there before. net.ipv4.ip_forward is
# never touched: pods reach only the node and each other.
#
# Environment:
#   KUBE_VERSION          Kubernetes version to run (default in hack/tools.sh: v1.37.2)
#   NODE_POD_SUBNET       the bridge's subnet, /24 (default 10.244.0.0/24)
#   NODE_TIMEOUT          seconds to wait for each component (default 120)
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/tools.sh
. "$HACK/tools.sh"
# shellcheck source=hack/daemons.sh
. "$HACK/daemons.sh"

MARKER=".pod-identity-webhook-node"
LOCK=/run/pod-identity-webhook-node.dir
NODE_NAME=piw-node
BRIDGE=piw-br0
NAT_CHAIN=PIW-NODE
POD_SUBNET="${NODE_POD_SUBNET:-10.244.0.0/24}"
POD_PREFIX="${POD_SUBNET%.*}"           # 10.244.0
NODE_IP="$POD_PREFIX.1"
POD_RANGE="${POD_PREFIX%.*}.0.0/16"      # 10.244.0.0/16: the rest is unreachable
SERVICE_CIDR=10.0.0.0/24                # hack/control-plane.sh's --service-cluster-ip-range
KUBERNETES_SERVICE_IP=10.0.0.1
TIMEOUT="${NODE_TIMEOUT:-120}"
CNI_BIN_DIR=/usr/lib/cni
CNI_NETWORK=pod-identity-webhook-node
TEST_IMAGE=docker.io/library/busybox:1.37
PAUSE_IMAGE=localhost/pod-identity-webhook/pause:local
# Directories containerd 1.6, CNI and the kubelet create at fixed places: removed at down
# when they did not exist before up and are empty again.
FIXED_DIRS=(/var/log/containers /var/log/pods /run/netns /var/lib/cni/results /var/lib/cni
  /run/containerd/runc/k8s.io /run/containerd/runc /run/containerd/s /run/containerd)
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

log() { printf '[node] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

kube_bin() {
  local b="$PIW_KUBE_DIR/$1"
  [ -x "$b" ] || die "$b not found: run hack/install-control-plane.sh (KUBE_VERSION=$KUBE_VERSION)"
  echo "$b"
}

kubectl() { "$PIW_KUBE_DIR/kubectl" --kubeconfig "$CP_DIR/kubeconfig" "$@"; }
ctr_() { ctr --address "$DIR/containerd/containerd.sock" -n k8s.io "$@"; }

# Waits up to TIMEOUT seconds for CMD to succeed; names WHAT and shows LOG when it does not.
wait_for() {
  local what="$1" log_file="$2" deadline=$((SECONDS + TIMEOUT))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      [ -z "$log_file" ] || tail -n 40 "$log_file" >&2 || true
      die "$what not ready after ${TIMEOUT}s${log_file:+ (log: $log_file)}"
    fi
    sleep 0.5
  done
}

check_prerequisites() {
  [ "$(id -u)" -eq 0 ] || die "the node needs root (containerd, kubelet, a bridge)"
  local missing=() t
  for t in containerd runc ctr buildah iptables ip busybox openssl curl; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  [ -x "$CNI_BIN_DIR/bridge" ] || missing+=("CNI plugins in $CNI_BIN_DIR")
  [ "${#missing[@]}" -eq 0 ] || die "missing: ${missing[*]}; run hack/install-node.sh"
  kube_bin kubelet >/dev/null
  kube_bin kube-controller-manager >/dev/null
  kube_bin kube-scheduler >/dev/null
}

# ------------------------------------------------------------------ images
# The pause and test images are built here from Debian's busybox-static (no registry is
# needed) and cached by busybox version.
# No `| head` here: busybox would die of SIGPIPE, and pipefail would end the script.
busybox_version() {
  local banner
  banner="$(busybox 2>&1 || true)"
  banner="${banner%%$'\n'*}"
  awk '{print $2}' <<<"$banner"
}

build_busybox_image() { # name archive entrypoint-json
  local name="$1" archive="$2" entry="$3" ctx store applet
  ctx="$(mktemp -d "${TMPDIR:-/tmp}/piw-image.XXXXXX")"
  mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/tmp"
  chmod 1777 "$ctx/rootfs/tmp"
  cp "$(command -v busybox)" "$ctx/rootfs/bin/busybox"
  for applet in $(busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$ctx/rootfs/bin/$applet"
  done
  printf 'FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nENTRYPOINT %s\n' "$entry" >"$ctx/Containerfile"
  store="$ctx/storage"
  local bah=(buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs)
  "${bah[@]}" bud --quiet --isolation chroot -f "$ctx/Containerfile" -t "$name" "$ctx" >/dev/null
  "${bah[@]}" push --quiet "$name" "docker-archive:$archive.tmp:$name"
  "${bah[@]}" rm --all >/dev/null 2>&1 || true
  rm -rf "$ctx"
  mv -f "$archive.tmp" "$archive"
}

ensure_images() {
  local dir="$PIW_CACHE_DIR/images" v
  v="$(busybox_version)"
  mkdir -p "$dir"
  PAUSE_ARCHIVE="$dir/pause-busybox-$v.tar"
  TEST_ARCHIVE="$dir/test-busybox-$v.tar"
  if [ ! -s "$PAUSE_ARCHIVE" ]; then
    log "building the pause image from busybox $v"
    # Sleeps, reaps its children, exits on TERM: all a sandbox's first process does.
    build_busybox_image "$PAUSE_IMAGE" "$PAUSE_ARCHIVE" \
      '["/bin/sh", "-c", "trap \"exit 0\" TERM INT; while :; do sleep 3600 & wait $!; done"]'
  fi
  if [ ! -s "$TEST_ARCHIVE" ]; then
    log "building the test image $TEST_IMAGE from busybox $v"
    build_busybox_image "$TEST_IMAGE" "$TEST_ARCHIVE" '["/bin/sh"]'
  fi
}

import_images() {
  local f
  for f in "$@"; do
    [ -r "$f" ] || die "image archive $f not found (the webhook's is built by \`make image\`)"
    ctr_ images import --no-unpack=false "$f" >/dev/null ||
      die "ctr could not import $f (is it a docker-archive or OCI archive?)"
    log "imported $f"
  done
}

# --------------------------------------------------------------- network
setup_network() {
  ip link add "$BRIDGE" type bridge
  ip addr add "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # DNAT to 127.0.0.1 needs route_localnet, on this bridge only.
  sysctl -qw "net.ipv4.conf.$BRIDGE.route_localnet=1"
  ip route add unreachable "$SERVICE_CIDR"
  ip route add unreachable "$POD_RANGE"
  iptables -t nat -N "$NAT_CHAIN"
  iptables -t nat -A PREROUTING -i "$BRIDGE" -j "$NAT_CHAIN"
  iptables -t nat -A "$NAT_CHAIN" -d "$KUBERNETES_SERVICE_IP/32" -p tcp --dport 443 \
    -j DNAT --to-destination "127.0.0.1:$APISERVER_PORT"
  mkdir -p "$DIR/cni/net.d" "$DIR/cni/ipam"
  # isGateway false: the bridge plugin would otherwise turn on ip_forward.
  cat >"$DIR/cni/net.d/10-piw.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$DIR/cni/ipam",
        "ranges": [[{ "subnet": "$POD_SUBNET", "gateway": "$NODE_IP" }]],
        "routes": [{ "dst": "0.0.0.0/0", "gw": "$NODE_IP" }]
      }
    },
    { "type": "loopback" }
  ]
}
EOF
}

teardown_network() {
  while iptables -t nat -D PREROUTING -i "$BRIDGE" -j "$NAT_CHAIN" 2>/dev/null; do :; done
  iptables -t nat -F "$NAT_CHAIN" 2>/dev/null || true
  iptables -t nat -X "$NAT_CHAIN" 2>/dev/null || true
  ip route del unreachable "$SERVICE_CIDR" 2>/dev/null || true
  ip route del unreachable "$POD_RANGE" 2>/dev/null || true
  ip link del "$BRIDGE" 2>/dev/null || true
  rm -f /var/lib/cni/results/"$CNI_NETWORK"-* 2>/dev/null || true
}

# ----------------------------------------------------------------- PKI
gen_node_pki() {
  local ca="$CP_DIR/pki"
  mkdir -p "$DIR/pki"
  (
    cd "$DIR/pki"
    umask 077
    sign() { # name subject extensions
      openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null
      openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
      printf '%s\n' "$3" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA "$ca/ca.crt" -CAkey "$ca/ca.key" -CAcreateserial \
        -sha256 -days 3650 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    sign kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
    sign kubelet-serving "/CN=$NODE_NAME" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
  )
  write_cert_kubeconfig "$DIR/kubelet/kubeconfig" "$APISERVER_PORT" "$ca/ca.crt" \
    "$DIR/pki/kubelet-client.crt" "$DIR/pki/kubelet-client.key" node
}

# ------------------------------------------------------------ processes
apiserver_extra_args() {
  # Aggregator routing: the API server dials a webhook Service's endpoints itself, since no
  # kube-proxy turns a ClusterIP into a pod address here. Kubelet client credentials: logs
  # and exec.
  echo "--enable-aggregator-routing=true --kubelet-preferred-address-types=InternalIP" \
    "--kubelet-client-certificate=$CP_DIR/pki/admin.crt --kubelet-client-key=$CP_DIR/pki/admin.key" \
    "${KUBE_APISERVER_EXTRA_ARGS:-}"
}

start_control_plane() {
  KUBE_APISERVER_EXTRA_ARGS="$(apiserver_extra_args)" KUBE_VERSION="$KUBE_VERSION" \
    "$HACK/control-plane.sh" up --dir "$CP_DIR" >/dev/null
  # shellcheck disable=SC1091
  . "$CP_DIR/state"
}

start_controllers() {
  local cm_port sched_port
  read -r cm_port sched_port <<<"$(free_ports 2)"
  local kc="$CP_DIR/kubeconfig" pki="$CP_DIR/pki"
  start_daemon "$DIR/logs/kube-controller-manager.log" "$DIR/kube-controller-manager.pid" \
    "$(kube_bin kube-controller-manager)" --kubeconfig="$kc" \
    --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port="$cm_port" --leader-elect=false \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --use-service-account-credentials=true --controllers='*' \
    --node-monitor-grace-period=20s --cert-dir="$DIR/controller-manager" --v=1 >/dev/null
  start_daemon "$DIR/logs/kube-scheduler.log" "$DIR/kube-scheduler.pid" \
    "$(kube_bin kube-scheduler)" --kubeconfig="$kc" \
    --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port="$sched_port" --leader-elect=false \
    --cert-dir="$DIR/scheduler" --v=1 >/dev/null
}

start_containerd() {
  mkdir -p "$DIR/containerd"
  cat >"$DIR/containerd/config.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$DIR/containerd/containerd.sock"
[ttrpc]
  address = "$DIR/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start.
  restrict_oom_score_adj = true
  disable_apparmor = true
  tolerate_missing_hugetlb_controller = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$DIR/cni/net.d"
    max_conf_num = 1
EOF
  start_daemon "$DIR/logs/containerd.log" "$DIR/containerd.pid" \
    containerd --config "$DIR/containerd/config.toml" >/dev/null
  wait_for containerd "$DIR/logs/containerd.log" ctr_ version
}

save_sysctls() {
  local s
  : >"$DIR/sysctls.saved"
  for s in "${SYSCTLS[@]}"; do
    [ -r "/proc/sys/${s//.//}" ] && printf '%s=%s\n' "$s" "$(cat "/proc/sys/${s//.//}")" >>"$DIR/sysctls.saved"
  done
}

restore_sysctls() {
  [ -s "$DIR/sysctls.saved" ] || return 0
  local line
  while IFS= read -r line; do sysctl -qw "$line" 2>/dev/null || log "could not restore $line"; done \
    <"$DIR/sysctls.saved"
}

start_kubelet() {
  local port healthz
  read -r port healthz <<<"$(free_ports 2)"
  mkdir -p "$DIR/kubelet/root" "$DIR/pod-logs"
  : >"$DIR/kubelet/resolv.conf"
  cat >"$DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz
containerRuntimeEndpoint: unix://$DIR/containerd/containerd.sock
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
makeIPTablesUtilChains: false
resolvConf: $DIR/kubelet/resolv.conf
podLogsDir: $DIR/pod-logs
tlsCertFile: $DIR/pki/kubelet-serving.crt
tlsPrivateKeyFile: $DIR/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $CP_DIR/pki/ca.crt}
authorization: {mode: Webhook}
maxPods: 40
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
nodeStatusReportFrequency: 10s
syncFrequency: 10s
registerNode: true
EOF
  save_sysctls
  start_daemon "$DIR/logs/kubelet.log" "$DIR/kubelet.pid" \
    "$(kube_bin kubelet)" --config="$DIR/kubelet/config.yaml" \
    --kubeconfig="$DIR/kubelet/kubeconfig" --root-dir="$DIR/kubelet/root" \
    --cert-dir="$DIR/kubelet/pki" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --v=1 >/dev/null
  wait_for "node $NODE_NAME registered" "$DIR/logs/kubelet.log" kubectl get node "$NODE_NAME"
  wait_for "node $NODE_NAME Ready" "$DIR/logs/kubelet.log" \
    kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
}

write_env() {
  {
    cat "$CP_DIR/env"
    echo "NODE_DIR=$DIR"
    echo "NODE_NAME=$NODE_NAME"
    echo "NODE_IP=$NODE_IP"
    echo "POD_SUBNET=$POD_SUBNET"
    echo "SERVICE_CIDR=$SERVICE_CIDR"
    echo "CONTAINERD_ADDRESS=$DIR/containerd/containerd.sock"
    echo "KUBE_VERSION=$KUBE_VERSION"
    echo "TEST_IMAGE=$TEST_IMAGE"
  } >"$DIR/env.tmp"
  mv -f "$DIR/env.tmp" "$DIR/env"
}

# -------------------------------------------------------------- teardown
# Pods first, through the kubelet, so CNI and containerd release what they hold; then the
# daemons; then, whatever is left, by force.
drain_pods() {
  [ -s "$CP_DIR/kubeconfig" ] && [ -s "$DIR/kubelet.pid" ] || return 0
  pid_is_ours "$(cat "$DIR/kubelet.pid")" "$DIR" || return 0
  # Without the controller manager no Deployment brings its pods back.
  [ ! -s "$DIR/kube-controller-manager.pid" ] ||
    stop_pid "$(cat "$DIR/kube-controller-manager.pid")" "$DIR" kube-controller-manager
  kubectl delete mutatingwebhookconfigurations,validatingwebhookconfigurations --all \
    --wait=false >/dev/null 2>&1 || true
  # Forced: the objects go at once, and the kubelet, seeing its pods gone, stops their
  # containers and sandboxes (CNI teardown included) on its next sync.
  kubectl delete pods --all -A --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
  local deadline=$((SECONDS + 60))
  while [ "$SECONDS" -lt "$deadline" ]; do
    [ -z "$(ctr_ tasks ls 2>/dev/null | awk 'NR > 1 && $3 == "RUNNING"')" ] && break
    sleep 0.5
  done
}

kill_leftover_shims() {
  local pid
  for pid in $(pgrep -f "containerd-shim.*-address $DIR/containerd/containerd.sock" || true); do
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
  done
}

unmount_under() { # every mount below $1, deepest first
  local m
  for m in $(awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}

remove_new_netns() {
  [ -f "$DIR/netns.before" ] || return 0
  local ns
  for ns in /var/run/netns/cni-*; do
    [ -e "$ns" ] || continue
    grep -qxF "$ns" "$DIR/netns.before" && continue
    umount "$ns" 2>/dev/null || true
    rm -f "$ns"
  done
}

remove_cgroups() {
  local hier
  for hier in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    [ -d "${hier}kubepods" ] || continue
    find "${hier}kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

record_fixed_dirs() {
  local d
  : >"$DIR/dirs.created"
  for d in "${FIXED_DIRS[@]}"; do [ -e "$d" ] || echo "$d" >>"$DIR/dirs.created"; done
}

remove_fixed_dirs() {
  [ -f "$DIR/dirs.created" ] || return 0
  local d
  while IFS= read -r d; do rmdir "$d" 2>/dev/null || true; done <"$DIR/dirs.created"
}

remove_log_links() {
  local link
  for link in /var/log/containers/*.log; do
    [ -L "$link" ] || continue
    case "$(readlink "$link")" in "$DIR"/*) rm -f "$link" ;; esac
  done
}

stop_all() {
  drain_pods
  local name
  for name in kubelet kube-scheduler kube-controller-manager; do
    [ ! -s "$DIR/$name.pid" ] || stop_pid "$(cat "$DIR/$name.pid")" "$DIR" "$name"
  done
  [ ! -s "$DIR/containerd.pid" ] || stop_pid "$(cat "$DIR/containerd.pid")" "$DIR" containerd
  kill_leftover_shims
  [ ! -f "$CP_DIR/.pod-identity-webhook-control-plane" ] ||
    "$HACK/control-plane.sh" down --dir "$CP_DIR" >/dev/null 2>&1 || true
  unmount_under "$DIR"
  remove_new_netns
  remove_cgroups
  remove_log_links
  remove_fixed_dirs
  teardown_network
  restore_sysctls
}

# -------------------------------------------------------------- commands
take_lock() {
  if [ -f "$LOCK" ]; then
    local other
    other="$(cat "$LOCK")"
    if [ "$other" != "$DIR" ] && [ -f "$other/$MARKER" ]; then
      if [ -s "$other/kubelet.pid" ] && pid_is_ours "$(cat "$other/kubelet.pid")" "$other"; then
        rmdir "$DIR" 2>/dev/null || true
        die "a node is already up in $other (hack/node.sh down --dir $other); one per machine"
      fi
      # Its kubelet is gone (a killed run): undo what it left, then go on.
      log "cleaning up a node left behind in $other"
      "${BASH_SOURCE[0]}" down --dir "$other" || true
    fi
  fi
  echo "$DIR" >"$LOCK"
}

release_lock() {
  [ "$(cat "$LOCK" 2>/dev/null)" != "$DIR" ] || rm -f "$LOCK"
}

cmd_up() {
  check_prerequisites
  if [ -z "${DIR:-}" ]; then
    DIR="$(mktemp -d "${TMPDIR:-/tmp}/piw-node.XXXXXX")"
  else
    mkdir -p "$DIR"
    DIR="$(cd "$DIR" && pwd -P)"
    [ ! -f "$DIR/$MARKER" ] || die "$DIR holds a node already (hack/node.sh down --dir $DIR)"
  fi
  CP_DIR="$DIR/control-plane"
  take_lock
  touch "$DIR/$MARKER"
  mkdir -p "$DIR/logs" "$DIR/kubelet"
  ls -d /var/run/netns/cni-* 2>/dev/null >"$DIR/netns.before" || true
  record_fixed_dirs
  local start=$SECONDS
  trap 'rc=$?; trap - EXIT; if [ "$rc" -ne 0 ]; then log "up failed; undoing (logs kept in $DIR/logs)"; stop_all; release_lock; fi; exit "$rc"' EXIT
  ensure_images
  start_control_plane
  setup_network
  gen_node_pki
  start_controllers
  start_containerd
  import_images "$PAUSE_ARCHIVE" "$TEST_ARCHIVE"
  start_kubelet
  wait_for "the default ServiceAccount" "$DIR/logs/kube-controller-manager.log" \
    kubectl -n default get serviceaccount default
  write_env
  trap - EXIT
  log "node $NODE_NAME Ready in $((SECONDS - start)) s (Kubernetes $KUBE_VERSION, dir $DIR)"
  cat "$DIR/env"
}

cmd_down() {
  [ -n "${DIR:-}" ] || die "--dir DIR is required"
  [ -d "$DIR" ] || { log "$DIR does not exist: nothing to do"; return 0; }
  [ -f "$DIR/$MARKER" ] || die "$DIR is not a node dir (no $MARKER)"
  CP_DIR="$DIR/control-plane"
  stop_all
  rm -rf "${DIR:?}"
  release_lock
  log "node in $DIR stopped; every change undone"
}

load_node() {
  [ -n "${DIR:-}" ] || die "--dir DIR is required"
  [ -f "$DIR/$MARKER" ] || die "$DIR is not a node dir (no $MARKER)"
  CP_DIR="$DIR/control-plane"
}

cmd_run() {
  [ "$#" -gt 0 ] || die "run: missing command after --"
  [ -n "${DIR:-}" ] || DIR="$(mktemp -d "${TMPDIR:-/tmp}/piw-node.XXXXXX")"
  # shellcheck disable=SC2317 # invoked by trap
  teardown() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -f "$DIR/$MARKER" ]; then (cmd_down) || true; fi
    exit "$rc"
  }
  trap teardown EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  (cmd_up >/dev/null) || exit 1
  set -a
  # shellcheck disable=SC1091
  . "$DIR/env"
  set +a
  local rc=0
  "$@" || rc=$?
  exit "$rc"
}

# shellcheck disable=SC2016 # the sh -c scripts get their values as $1, $2
cmd_selftest_inner() {
  load_node
  check "node Ready" kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=10s
  check "pod runs" sh -c 'printf "%s\n" "apiVersion: v1" "kind: Pod" \
    "metadata: {name: selftest, namespace: default}" \
    "spec: {containers: [{name: c, image: $2, command: [sh, -c, \"echo started; sleep 3600\"]}]}" |
    "$1" --kubeconfig "$3" apply -f - && "$1" --kubeconfig "$3" wait --for=condition=Ready \
    pod/selftest --timeout=60s' _ "$PIW_KUBE_DIR/kubectl" "$TEST_IMAGE" "$CP_DIR/kubeconfig"
  check "kubectl logs" sh -c '"$1" --kubeconfig "$2" logs selftest | grep -qx started' \
    _ "$PIW_KUBE_DIR/kubectl" "$CP_DIR/kubeconfig"
  # A TCP connection is the check: busybox's TLS lacks the API server's cipher suites.
  check "the API server through the kubernetes Service, from the pod" \
    kubectl exec selftest -- sh -c 'echo | nc -w 3 "$KUBERNETES_SERVICE_HOST" "$KUBERNETES_SERVICE_PORT"'
  check "ip_forward untouched" sh -c '[ "$(cat /proc/sys/net/ipv4/ip_forward)" = "$1" ]' _ "$IP_FORWARD_BEFORE"
  check_summary
}

# ------------------------------------------------------------------ main
[ "$#" -gt 0 ] || usage
CMD="$1"
shift
DIR=""
FILES=()
STOP_SIGNAL=TERM
while [ "$#" -gt 0 ]; do
  case "$1" in
    --dir) [ "$#" -ge 2 ] || die "--dir needs a value"; DIR="$2"; shift 2 ;;
    --dir=*) DIR="${1#--dir=}"; shift ;;
    --kill) STOP_SIGNAL=KILL; shift ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) if [ "$CMD" = load-image ]; then FILES+=("$1"); shift; else die "unknown argument: $1"; fi ;;
  esac
done
if [ -n "$DIR" ] && [ -d "$DIR" ]; then DIR="$(cd "$DIR" && pwd -P)"; fi

case "$CMD" in
  up) cmd_up ;;
  down) cmd_down ;;
  run) cmd_run "$@" ;;
  load-image)
    load_node
    [ "${#FILES[@]}" -gt 0 ] || die "load-image: no archive given"
    import_images "${FILES[@]}"
    ;;
  restart-apiserver)
    load_node
    args=(restart-apiserver --dir "$CP_DIR")
    [ "$STOP_SIGNAL" = TERM ] || args+=(--kill)
    KUBE_APISERVER_EXTRA_ARGS="$(apiserver_extra_args)" "$HACK/control-plane.sh" "${args[@]}"
    write_env
    ;;
  selftest)
    exec "${BASH_SOURCE[0]}" run -- env IP_FORWARD_BEFORE="$(cat /proc/sys/net/ipv4/ip_forward)" \
      "${BASH_SOURCE[0]}" _selftest-inner
    ;;
  _selftest-inner) DIR="$NODE_DIR" cmd_selftest_inner ;;
  -h|--help|help) usage ;;
  *) die "unknown command: $CMD" ;;
esac
