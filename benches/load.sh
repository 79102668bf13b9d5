#!/usr/bin/env bash
# The load benchmark in one command: installs h2load if missing, builds the release binary
# and the reference webhook (hack/install-reference-webhook.sh, cached), runs benches/load.rs
# (ours, a null webhook and the reference on CPU 0, h2load on CPU 1) and prints the ratios.
# See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v h2load >/dev/null; then
    echo "h2load not found; installing nghttp2-client" >&2
    sudo_if_needed=""
    [ "$(id -u)" -eq 0 ] || sudo_if_needed="sudo"
    $sudo_if_needed apt-get install -y nghttp2-client >/dev/null
fi
PIW_REFERENCE_WEBHOOK_BINARY="${PIW_REFERENCE_WEBHOOK_BINARY:-$(hack/install-reference-webhook.sh | tail -n 1)}"
export PIW_REFERENCE_WEBHOOK_BINARY
cargo build --locked --release --bin pod-identity-webhook
cargo bench --locked --bench load
