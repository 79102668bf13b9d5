#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 10), seeded from tests/fixtures.
#   hack/fuzz.sh [SECONDS]            all targets
#   FUZZ_TARGETS="engine review" hack/fuzz.sh 60
#   FUZZ_JOBS=2 hack/fuzz.sh 3600     libFuzzer fork mode with 2 processes per target
#   FUZZ_SANITIZER=none hack/fuzz.sh 5  no AddressSanitizer: the quick check `make test` runs
#                                       (a panic is still a crash; builds in its own target dir)
# Needs the nightly toolchain and cargo-fuzz (installed here if missing). The fuzz crate is
# fuzz/, outside the main build; corpora grow in fuzz/corpus/<target>, crashes land in
# fuzz/artifacts/<target>. Prints each target's executions; exits non-zero on a crash.
set -euo pipefail

seconds="${1:-10}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
rustup run nightly true 2>/dev/null || { echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2; exit 1; }

targets="${FUZZ_TARGETS:-review engine manifests config_map container_credentials flags}"
jobs="${FUZZ_JOBS:-1}"
sanitizer="${FUZZ_SANITIZER:-address}"
build_flags=(-O -s "$sanitizer")
# Each sanitizer keeps its own build: switching would otherwise rebuild everything each time.
if [ "$sanitizer" != address ]; then
  build_flags+=(--target-dir "fuzz/target/sanitizer-$sanitizer")
fi

# The pods of the engine's fixtures, one file each in CORPUS; with "identity-byte", each after a
# zero byte.
fixture_pods() {
  local corpus="$1" prefix="${2:-}"
  for pod in tests/fixtures/mutate/*.json; do
    case "$pod" in *.expected.json) continue ;; esac
    python3 - "$pod" "$corpus/$(basename "$pod" .json)" "$prefix" <<'PY'
import json, sys
case = json.load(open(sys.argv[1]))
pod = case.get("pod", case) if isinstance(case, dict) else case
prefix = b"\x00" if sys.argv[3] == "identity-byte" else b""
open(sys.argv[2], "wb").write(prefix + json.dumps(pod).encode())
PY
  done
}

# Seeds: every fixture whose format the target reads. Copied, so the fixtures stay as they are.
seed() {
  local target="$1"
  local corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  case "$target" in
    review) cp tests/fixtures/admission/*.json "$corpus/" ;;
    # The engine target's first byte picks the identity; the rest is the pod.
    engine) fixture_pods "$corpus" identity-byte ;;
    manifests) cp examples/*.yaml "$corpus/" 2>/dev/null || true; cp tests/fixtures/admission/*.json "$corpus/" ;;
    config_map) printf '%s' '{"payments/api":{"RoleARN":"arn:aws:iam::111122223333:role/r","Audience":"sts.amazonaws.com","UseRegionalSTS":true,"TokenExpiration":3600},"*/default":{}}' > "$corpus/seed.json" ;;
    container_credentials) printf '%s' '{"identities":[{"namespace":"payments","serviceAccount":"api"}]}' > "$corpus/seed.json" ;;
    flags) printf '\x03%s' '86400' > "$corpus/expiration"; printf '\x1b%s' '1m30s' > "$corpus/grace"; printf '\x11%s' '1.3' > "$corpus/tls" ;;
  esac
}

cargo +nightly fuzz build "${build_flags[@]}" >/dev/null
parallel=()
if [ "$jobs" -gt 1 ]; then
  parallel=(-fork="$jobs")
fi
status=0
for target in $targets; do
  seed "$target"
  mkdir -p "fuzz/artifacts/$target"
  log="fuzz/artifacts/$target.log"
  if cargo +nightly fuzz run "${build_flags[@]}" "$target" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" "${parallel[@]}" -print_final_stats=1 \
      -artifact_prefix="fuzz/artifacts/$target/" >"$log" 2>&1; then
    result=ok
  else
    result=CRASH
    status=1
  fi
  # Executions: libFuzzer's final statistic, else the last "#N" progress line (fork mode).
  runs="$(grep -h '^stat::number_of_executed_units' "$log" | awk '{s+=$2} END {print s+0}')"
  if [ "$runs" = 0 ]; then
    runs="$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')"
  fi
  echo "$target: $result, ${runs:-0} executions in ${seconds}s (log: $log)"
done
exit "$status"
