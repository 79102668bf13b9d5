#!/usr/bin/env bash
# Builds promtool from the Prometheus Go module, no download of release binaries, with
# promql-selectors beside it (hack/promql-selectors: the selectors of PromQL expressions, by
# the same module's parser), for the alert and dashboard tests (tests/it/monitoring.rs):
#
#   promtool          github.com/prometheus/prometheus/cmd/promtool at PROMETHEUS_MODULE_VERSION
#                     (default v0.316.0, Prometheus 3.16.0), without the service-discovery
#                     plugins it does not need to check and test rules (-tags remove_all_sd)
#   promql-selectors  hack/promql-selectors against the same module
#
# The builds are cached outside the work tree, keyed by version (and the helper by a hash of
# its source):
#   ${XDG_CACHE_HOME:-~/.cache}/pod-identity-webhook/prometheus-v0.X.Y/promtool
#   ${XDG_CACHE_HOME:-~/.cache}/pod-identity-webhook/prometheus-v0.X.Y/promql-selectors-<hash>
# and linked into .../pod-identity-webhook/bin. Idempotent: what is built is not built again.
#
# Env: PROMETHEUS_MODULE_VERSION, XDG_CACHE_HOME
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/tools.sh
. "$HACK/tools.sh"

log() { printf '[install-promtool] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

promtool="$PIW_PROMETHEUS_DIR/promtool"
helper_source="$HACK/promql-selectors/main.go"
helper="$PIW_PROMETHEUS_DIR/promql-selectors-$(sha256sum "$helper_source" | cut -c1-12)"
# Prometheus 3.X.Y is module v0.3XX.Y: what promtool --version reports.
module_minor="$(cut -d. -f2 <<<"$PROMETHEUS_MODULE_VERSION")"
release="3.$((10#${module_minor#3})).${PROMETHEUS_MODULE_VERSION##*.}"

packages=()
[[ -x "$promtool" ]] || packages+=(github.com/prometheus/prometheus/cmd/promtool)
[[ -x "$helper" ]] || packages+=(./promql-selectors)

if ((${#packages[@]})); then
  command -v go >/dev/null 2>&1 || die "go is required to build promtool (install Go 1.26 or later)"
  go_build_env
  start=$SECONDS
  tmp="$(new_module_dir)"
  trap 'rm -rf "$tmp"' EXIT
  log "building ${packages[*]} from github.com/prometheus/prometheus $PROMETHEUS_MODULE_VERSION with $(go version)"
  printf 'module local.invalid/promtool-build\n\ngo 1.24\n\nrequire github.com/prometheus/prometheus %s\n' \
    "$PROMETHEUS_MODULE_VERSION" >"$tmp/go.mod"
  mkdir -p "$tmp/promql-selectors" "$tmp/out" "$PIW_PROMETHEUS_DIR"
  cp "$helper_source" "$tmp/promql-selectors/main.go"
  go_build_in "$tmp" -trimpath -tags remove_all_sd \
    -ldflags="-s -w -X github.com/prometheus/common/version.Version=$release" \
    -o "$tmp/out/" "${packages[@]}" ||
    die "promtool did not build (see the go output above)"
  if [[ -e "$tmp/out/promtool" ]]; then
    "$tmp/out/promtool" --version >/dev/null || die "the freshly built promtool does not run"
    mv -f "$tmp/out/promtool" "$promtool"
  fi
  if [[ -e "$tmp/out/promql-selectors" ]]; then
    [[ "$(echo '["up"]' | "$tmp/out/promql-selectors")" == '[[{"metric":"up","matchers":[]}]]' ]] ||
      die "the freshly built promql-selectors does not answer as expected"
    mv -f "$tmp/out/promql-selectors" "$helper"
  fi
  log "built in $((SECONDS - start)) s"
else
  log "promtool $release and promql-selectors already built"
fi

mkdir -p "$PIW_TOOLS_BIN"
ln -sfn "$promtool" "$PIW_TOOLS_BIN/promtool"
ln -sfn "$helper" "$PIW_TOOLS_BIN/promql-selectors"
echo "promtool:         $promtool ($("$promtool" --version 2>&1 | head -1))"
echo "promql-selectors: $helper"
