#!/usr/bin/env bash
# cairn vs etcd 3.4, same machine, same run, alternating rounds.
#
#   bench/compare-etcd.sh [ROUNDS] [MEMBERS]
#
# Installs Debian's etcd-server if missing, builds cairn and cairn-bench in
# release, then for each round starts etcd and cairn (each on a fresh data dir
# under $DIR, loopback ports, fsync on), runs every scenario against each with
# cairn-bench, and stops them by PID. The order alternates (etcd first in odd
# rounds, cairn first in even ones). Prints medians, spread and cairn/etcd
# ratios as markdown, and plots them (bench/plots/*.svg, shown in README).
# MEMBERS: 1 (clusters are not built yet).
# Env: DIR (data, default target/compare-data; must not be tmpfs), SHARDS
# (cairn --shards; default: cairn's own, one per online CPU), SCENARIOS
# (space-separated subset).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
MEMBERS=${2:-1}
DIR=${DIR:-$PWD/target/compare-data}
SHARDS=${SHARDS:-}
OUT=${OUT:-bench/out/compare-etcd}
SCENARIOS=${SCENARIOS:-"put-1 put-100 put-1000 range-l range-s txn-put"}
if [ "$MEMBERS" != 1 ]; then
  echo "compare-etcd: only single-member runs exist so far" >&2
  exit 2
fi
command -v etcd >/dev/null || { apt-get update -qq && apt-get install -y -qq etcd-server >/dev/null; }
cargo build --release -q -p cairn -p cairn-tools
mkdir -p "$OUT" "$DIR"
rm -f "$OUT"/*.json
BENCH=target/release/cairn-bench
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start() { # system port -> pid
  local sys=$1 port=$2 peer=$(( $2 + 10 ))
  rm -rf "$DIR/$sys"
  if [ "$sys" = etcd ]; then
    etcd --name bench --data-dir "$DIR/$sys" \
      --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "bench=http://127.0.0.1:$peer" >"$DIR/$sys.log" 2>&1 &
  else
    target/release/cairn --data-dir "$DIR/$sys" --listen-client-urls "http://127.0.0.1:$port" \
      ${SHARDS:+--shards "$SHARDS"} >"$DIR/$sys.log" 2>&1 &
  fi
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 300); do
    if $BENCH --endpoints "127.0.0.1:$port" --total 1 range ready >/dev/null 2>&1; then echo "$pid"; return; fi
    sleep 0.1
  done
  echo "$sys did not start" >&2; exit 1
}

scenario() { # name endpoint
  local e=$1 s=$2
  local common=(--endpoints "$e" --key-size 8 --val-size 256)
  case "$s" in
    put-1)    $BENCH "${common[@]}" --conns 1 --clients 1 --total 2000 --key-space-size 100000 put ;;
    put-100)  $BENCH "${common[@]}" --conns 10 --clients 100 --total 30000 --key-space-size 100000 put ;;
    put-1000) $BENCH "${common[@]}" --conns 100 --clients 1000 --total 50000 --key-space-size 100000 put ;;
    range-l)  $BENCH "${common[@]}" --conns 10 --clients 100 --total 30000 range foo --consistency l ;;
    range-s)  $BENCH "${common[@]}" --conns 10 --clients 100 --total 30000 range foo --consistency s ;;
    txn-put)  $BENCH "${common[@]}" --conns 10 --clients 100 --total 20000 --key-space-size 1000 txn-put ;;
  esac | tail -1
}

for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then order="etcd cairn"; else order="cairn etcd"; fi
  for sys in $order; do
    port=23790; [ "$sys" = cairn ] && port=23791
    echo "round $round/$ROUNDS: $sys" >&2
    pid=$(start "$sys" "$port")
    $BENCH --endpoints "127.0.0.1:$port" --total 1 put >/dev/null  # key "foo" for the range scenarios is absent: ranges read an empty key
    for s in $SCENARIOS; do
      scenario "127.0.0.1:$port" "$s" > "$OUT/$sys.$s.$round.json"
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done

python3 - "$OUT" "$ROUNDS" "$SCENARIOS" <<'PY'
import json, statistics, sys, glob
out, rounds, scenarios = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
def load(sys_, s):
    return [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{sys_}.{s}.*.json"))]
print(f"| scenario ({rounds} rounds) | etcd req/s median (min..max) | cairn req/s median (min..max) | cairn/etcd | etcd p99 ms | cairn p99 ms |")
print("|---|---|---|---:|---:|---:|")
for s in scenarios:
    e, c = load("etcd", s), load("cairn", s)
    if not e or not c:
        continue
    er, cr = [x["rps"] for x in e], [x["rps"] for x in c]
    ratios = [a / b for a, b in zip(cr, er)]
    errs = sum(x["errors"] for x in c) + sum(x["errors"] for x in e)
    note = f" ({errs} errors)" if errs else ""
    print(f"| {s}{note} | {statistics.median(er):,.0f} ({min(er):,.0f}..{max(er):,.0f}) | "
          f"{statistics.median(cr):,.0f} ({min(cr):,.0f}..{max(cr):,.0f}) | {statistics.median(ratios):.2f} | "
          f"{statistics.median(x['p99_ms'] for x in e):.1f} | {statistics.median(x['p99_ms'] for x in c):.1f} |")
PY
target/release/bench-plot --results "$OUT" --out bench/plots >&2
