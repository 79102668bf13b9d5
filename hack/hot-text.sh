#!/usr/bin/env bash
# Regenerates link/hot-text.ld: the functions a running webhook executes, which the release
# link lays out side by side at the start of the code (build.rs). Code pages are read in
# 64 KiB at a time, so when those functions lie scattered over the binary nearly all of it
# becomes resident; gathered, only their own pages do (docs/benchmarks.md, Memory).
#
# Usage: hack/hot-text.sh        (about 6 minutes; needs the control plane's tools installed)
#
# The webhook runs under valgrind's callgrind against a throw-away control plane three times:
# the image's static binary with the deployment's flags (built-in certificate mode) and with
# certificate files, and the release binary (`cargo build --release`, what the benchmarks run)
# with certificate files. Each run starts, lists and watches, serves reviews over h2 and
# HTTP/1.1 (small, large, over the inline size, a pod update, a malformed one), answers
# health and metrics, and shuts down on SIGTERM. Every function callgrind saw is written as a
# pattern without the part of a symbol that changes between builds (the crate hash), so the
# file stays useful as code changes: a function added later only lies outside the block.
# Rerun it after large changes and commit the result.
set -euo pipefail
export LC_ALL=C

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/tools.sh
. "$ROOT/hack/tools.sh"
OUT="$ROOT/link/hot-text.ld"
log() { printf '[hot-text] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then command -v sudo >/dev/null 2>&1 && SUDO="sudo"; fi
missing=()
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
KUBECTL="$PIW_KUBE_DIR/kubectl"
[ -x "$KUBECTL" ] || die "$KUBECTL not found: run hack/install-control-plane.sh"

log "building the release binary and the image's static one"
(cd "$ROOT" && cargo build --release --locked --bin pod-identity-webhook)
DYNAMIC="$ROOT/target/release/pod-identity-webhook"
STATIC="$ROOT/target/$(uname -m)-unknown-linux-gnu/release/pod-identity-webhook"

WORK="$(mktemp -d)"
cleanup() {
  "$ROOT/hack/control-plane.sh" down --dir "$WORK/cp" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
"$ROOT/hack/build-image.sh" --stage-only "$WORK/rootfs"
"$ROOT/hack/control-plane.sh" up --dir "$WORK/cp" >/dev/null
"$ROOT/hack/control-plane.sh" create-namespace --dir "$WORK/cp" payments pod-identity-webhook
export KUBECONFIG="$WORK/cp/kubeconfig"
"$KUBECTL" -n payments create serviceaccount api >/dev/null
"$KUBECTL" -n payments annotate serviceaccount api \
  eks.amazonaws.com/role-arn=arn:aws:iam::111122223333:role/api >/dev/null
"$KUBECTL" apply -f "$ROOT/deploy/mutatingwebhookconfiguration.yaml" >/dev/null

# Review bodies: the fixture (2 containers), one of 20 containers x 50 env (about 50 KB),
# one over the 64 KiB answered inline, a review of a pod update, and a malformed one.
FIXTURE="$ROOT/tests/fixtures/admission/pod-create-v1.json"
container() { # name, env count
  local env="" i
  for ((i = 0; i < $2; i++)); do env+="${env:+,}{\"name\":\"VAR_$i\",\"value\":\"value-$i\"}"; done
  printf '{"name":"%s","image":"registry.example/app:1","env":[%s]}' "$1" "$env"
}
review() { # operation, containers JSON
  printf '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"0f6c1c3e-2b1a-4f7e-8d4a-2c9b7e6f5a41","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"payments","operation":"%s","userInfo":{"username":"system:serviceaccount:kube-system:replicaset-controller"},"object":{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"api-7d9f8c6b5-","namespace":"payments"},"spec":{"serviceAccountName":"api","containers":[%s]}}}}' "$1" "$2"
}
many() { # count, env per container
  local all="" i
  for ((i = 0; i < $1; i++)); do all+="${all:+,}$(container "worker-$i" "$2")"; done
  printf '%s' "$all"
}
review CREATE "$(many 20 50)" >"$WORK/large.json"
review CREATE "$(many 30 50)" >"$WORK/over-inline.json"
review UPDATE "$(many 1 1)" >"$WORK/update.json"
printf '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":' >"$WORK/malformed.json"

# run_once NAME BINARY FLAGS...: one profiled run of the webhook.
run_once() {
  local name="$1" bin="$2" pid port=18643 metrics=18644 i
  shift 2
  log "profiling: $name"
  valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.callgrind" --dump-instr=no \
    --compress-strings=no --demangle=no "$bin" --port=$port --metrics-port=$metrics \
    --bind-address=127.0.0.1 --kubeconfig="$KUBECONFIG" "$@" >"$WORK/$name.log" 2>&1 &
  pid=$!
  for i in $(seq 600); do
    curl -sf "http://127.0.0.1:$metrics/readyz" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$WORK/$name.log" >&2; die "$name: the webhook exited"; }
    sleep 0.1
  done
  [ "$i" -lt 600 ] || die "$name: not ready within 60 s (log: $WORK/$name.log)"
  local url="https://127.0.0.1:$port/mutate" type='content-type: application/json'
  curl -sk -H "$type" --data-binary @"$FIXTURE" "$url" | grep -q '"patch"' ||
    { cat "$WORK/$name.log" >&2; die "$name: the fixture's pod was not mutated"; }
  for body in "$FIXTURE" "$WORK/large.json" "$WORK/over-inline.json" "$WORK/update.json"; do
    h2load -c2 -m4 -n100 -d "$body" -H "$type" "$url" >/dev/null
    h2load --h1 -c2 -n100 -d "$body" -H "$type" "$url" >/dev/null
  done
  curl -sk -o /dev/null -H "$type" --data-binary @"$WORK/malformed.json" "$url"
  curl -sk -o /dev/null "https://127.0.0.1:$port/healthz"
  curl -sk -o /dev/null "https://127.0.0.1:$port/readyz"
  curl -s -o /dev/null "http://127.0.0.1:$metrics/metrics"
  kill -TERM "$pid"
  wait "$pid" || die "$name: the webhook did not exit cleanly (log: $WORK/$name.log)"
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
run_once deployment "$STATIC" --namespace=pod-identity-webhook \
  --service-name=pod-identity-webhook --in-cluster=true --tls-secret=pod-identity-webhook-tls \
  --webhook-config-name=pod-identity-webhook-mutating --shutdown-delay=0s
run_once certificate-files "$STATIC" --tls-cert="$WORK/tls.crt" --tls-key="$WORK/tls.key" \
  --shutdown-delay=0s --log-format=json
run_once dynamic "$DYNAMIC" --tls-cert="$WORK/tls.crt" --tls-key="$WORK/tls.key" \
  --shutdown-delay=0s

# The functions each run saw, kept to those defined in the binary it ran, as patterns: a v0
# symbol's crate disambiguators (`Cs<hash>_`) become `Cs*_`; other symbols (C, assembly) stay
# exact. Functions more runs saw come first, so a deployment that uses one certificate mode
# keeps the other mode's code out of its pages.
for run in deployment:"$STATIC" certificate-files:"$STATIC" dynamic:"$DYNAMIC"; do
  nm --defined-only "${run#*:}" | awk '$2 ~ /^[tTwW]$/ { print $3 }' | sort -u >"$WORK/defined"
  sed -n 's/^c\{0,1\}fn=//p' "$WORK/${run%%:*}.callgrind" | sort -u | comm -12 - "$WORK/defined" |
    sed -E '/^_R/ s/Cs[0-9A-Za-z]*_/Cs*_/g' | sort -u
done | sort | uniq -c | sort -k1,1nr -k2,2 | awk '{ print $2 }' >"$WORK/patterns"
[ -s "$WORK/patterns" ] || die "no function of the binary was seen; is it stripped?"
mkdir -p "$(dirname "$OUT")"
{
  echo "/* Generated by hack/hot-text.sh; do not edit. The functions a running webhook executes,"
  echo "   gathered before the rest of the code so fewer code pages become resident. */"
  echo "SECTIONS"
  echo "{"
  echo "  .text.hot : {"
  sed 's/.*/    *(.text.& .text.unlikely.&)/' "$WORK/patterns"
  echo "  }"
  echo "}"
  echo "INSERT BEFORE .text;"
} >"$OUT"
log "wrote $OUT: $(wc -l <"$WORK/patterns") functions"
