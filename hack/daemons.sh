# Sourced by the hack/ scripts that run local daemons (control-plane.sh, node.sh): free ports,
# starting a detached daemon with its pid file, stopping only processes that are ours,
# certificate kubeconfigs, the selftests' checks, and usage text from the script's header.
# The sourcing script defines log and die.
# shellcheck shell=bash

# Print N distinct free TCP ports on 127.0.0.1, below the kernel's ephemeral range: a port
# from that range can be taken, while its daemon restarts, by some client's outgoing
# connection (even a connection to itself), and the daemon then cannot listen on it again.
free_ports() {
  local n="$1" low=32768
  [ -r /proc/sys/net/ipv4/ip_local_port_range ] && read -r low _ </proc/sys/net/ipv4/ip_local_port_range
  python3 - "$n" "$low" <<'EOF'
import random, socket, sys
n, low = int(sys.argv[1]), int(sys.argv[2])
socks = []
while len(socks) < n:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", random.randrange(max(1024, low - 12000), low)))
        socks.append(s)
    except OSError:
        s.close()
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

# Is PID alive and one of ours (its command line mentions DIR)? A zombie is gone: it holds
# no files or sockets any more. A process still exiting has an empty command line but may
# still hold its listening socket, so it counts as alive until it is a zombie.
pid_is_ours() {
  local pid="$1" dir="$2" state cmdline
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ -r "/proc/$pid/status" ] || return 0
  state="$(awk '/^State:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)"
  case "$state" in Z|X|"") return 1 ;; esac
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [ -n "$cmdline" ] || return 0
  [[ "$cmdline" == *"$dir"* ]]
}

stop_pid() {
  local pid="$1" dir="$2" name="$3" sig="${4:-TERM}" _
  pid_is_ours "$pid" "$dir" || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    pid_is_ours "$pid" "$dir" || return 0
    sleep 0.1
  done
  log "$name (pid $pid) did not stop after 10 s, killing"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    pid_is_ours "$pid" "$dir" || return 0
    sleep 0.1
  done
}

# Start a daemon in its own session (so Ctrl-C in the caller's terminal does
# not reach it and it outlives `up`), stdin from /dev/null, output to LOG.
# Prints its pid.
start_daemon() {
  local log_file="$1" pid_file="$2"
  shift 2
  rm -f "$pid_file"
  # The inner shell writes its own pid, then execs the daemon, so the pid is
  # right even if setsid has to fork.  ETCD_* variables are removed: etcd
  # reads them as flags (and DIR/env has ETCD_PID / ETCD_URL).
  local unset_args=() v
  for v in $(compgen -e | grep '^ETCD_' || true); do unset_args+=(-u "$v"); done
  # shellcheck disable=SC2016 # $$ and $@ are for the inner shell
  env "${unset_args[@]}" -u HTTP_PROXY -u HTTPS_PROXY -u http_proxy -u https_proxy \
    NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost \
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pid_file" "$@" \
    </dev/null >>"$log_file" 2>&1 &
  local _
  for _ in $(seq 1 50); do
    [ -s "$pid_file" ] && break
    sleep 0.05
  done
  [ -s "$pid_file" ] || die "could not start $1"
  cat "$pid_file"
}


# Selftest checks: `check DESCRIPTION CMD...` runs CMD and logs PASS or FAIL with its output;
# `check_summary` prints "N passed, N failed" and fails when any check did.
CHECKS_PASSED=0
CHECKS_FAILED=0
check() {
  local what="$1" out
  shift
  if out="$("$@" 2>&1)"; then
    CHECKS_PASSED=$((CHECKS_PASSED + 1)); log "PASS $what"
  else
    CHECKS_FAILED=$((CHECKS_FAILED + 1)); log "FAIL $what: $out"
  fi
}

check_summary() {
  echo "$CHECKS_PASSED passed, $CHECKS_FAILED failed"
  [ "$CHECKS_FAILED" -eq 0 ]
}

# write_cert_kubeconfig FILE PORT CA CERT KEY USER [NAMESPACE]: a kubeconfig for the loopback API
# server on PORT, authenticating with a client certificate, credentials embedded.
write_cert_kubeconfig() {
  local file="$1" port="$2" ca="$3" cert="$4" key="$5" user="$6" namespace="${7:-default}"
  local b64="base64 -w0"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $($b64 <"$ca")
users:
- name: $user
  user:
    client-certificate-data: $($b64 <"$cert")
    client-key-data: $($b64 <"$key")
contexts:
- name: local
  context:
    cluster: local
    user: $user
    namespace: $namespace
current-context: local
EOF
  chmod 0600 "$file"
}

# The running script's header comment (line 2 up to `set -euo`), as its usage; exits 2.
usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[-1]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}
