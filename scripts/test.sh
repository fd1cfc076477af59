#!/usr/bin/env bash
# Runs every test with the real peers it needs: a private redis-server per
# test (started by the tests themselves), one Samba AD DC and one step-ca
# for the whole run (started here, stopped on exit by PID).
#
#   scripts/test.sh               every test, then each fuzz target briefly
#   scripts/test.sh --bench RE    the benchmarks matching RE, with figures
set -euo pipefail
cd "$(dirname "$0")/.."

mode=test bench=.
if [ "${1:-}" = --bench ]; then mode=bench bench=${2:-.}; fi

scripts/deps.sh test
peers=$PWD/.peers
mkdir -p "$peers"
stop_peers() {
  scripts/samba.sh stop "$peers/samba" >/dev/null 2>&1 || true
  scripts/stepca.sh stop "$peers/stepca" >/dev/null 2>&1 || true
}
trap stop_peers EXIT
stop_peers # a run killed earlier may have left its own peers behind

t0=$(date +%s)
scripts/samba.sh start "$peers/samba" >/dev/null
scripts/stepca.sh start "$peers/stepca" >/dev/null
# shellcheck disable=SC1091
source "$peers/samba/env"
# shellcheck disable=SC1091
source "$peers/stepca/env"
echo "peers ready in $(( $(date +%s) - t0 ))s"
export AMTOPS_REQUIRE_PEERS=1

if [ "$mode" = bench ]; then
  go test -run '^$' -bench "$bench" -benchmem -timeout 30m ./...
  exit 0
fi

go test -count=1 -timeout 25m ./...

# Each fuzz target briefly, beyond its seed corpus (which the run above covered).
# The budget is a count: a wall-clock -fuzztime races Go's fuzz coordinator
# (go.dev/issue/75804, unfixed in Go 1.26) and fails a target with
# "context deadline exceeded" and no crasher on a busy machine.
grep -rl --include='*_test.go' '^func Fuzz' . | while read -r f; do
  pkg=./$(dirname "${f#./}")
  grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | cut -d' ' -f2 | while read -r fn; do
    go test -run '^$' -fuzz "^${fn}\$" -fuzztime "${FUZZTIME:-5000x}" "$pkg"
  done
done
