#!/usr/bin/env bash
# Runs one phase of `make test` and says how long it took, on its own line and in a table
# that grows with each phase (target/test-phases.txt), printed again at the end, also when
# a phase fails.
#
# Usage: hack/timed.sh --start             forget the phases of an earlier run
#        hack/timed.sh NAME COMMAND...     run COMMAND as phase NAME
#        hack/timed.sh --summary           print the table and the total
set -uo pipefail

table="$(dirname "${BASH_SOURCE[0]}")/../target/test-phases.txt"

summary() {
  local total=0 name seconds status
  echo "make test: how long each phase took"
  while read -r name seconds status; do
    printf '  %-16s %5d s  %s\n' "$name" "$seconds" "$status"
    total=$((total + seconds))
  done <"$table"
  printf '  %-16s %5d s\n' total "$total"
}

case "${1:-}" in
  --start)
    mkdir -p "$(dirname "$table")"
    : >"$table"
    ;;
  --summary)
    summary
    ;;
  "" | -*)
    echo "usage: hack/timed.sh --start | NAME COMMAND... | --summary" >&2
    exit 2
    ;;
  *)
    name="$1"
    shift
    start=$SECONDS
    "$@"
    status=$?
    seconds=$((SECONDS - start))
    if ((status == 0)); then
      echo "$name $seconds ok" >>"$table"
      echo "make test: $name took $seconds s"
    else
      echo "$name $seconds FAILED" >>"$table"
      echo "make test: $name FAILED after $seconds s (exit code $status)" >&2
      summary >&2
    fi
    exit "$status"
    ;;
esac
