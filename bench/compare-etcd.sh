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
# (cairn --shards; default: cairn's own, one per CPU it may run on), SCENARIOS
# (space-separated subset), PIN (a comma-separated CPU list, e.g. PIN=1: both
# servers run under `taskset -c $PIN` and the load generator on the other
# CPUs, as when clients are on other machines; results then go to
# bench/out/compare-etcd-pin and bench/plots/pinned).
# Besides req/s and latency, each server's CPU time per request (user+system
# from /proc/<pid>/stat over the scenario) is reported.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
MEMBERS=${2:-1}
DIR=${DIR:-$PWD/target/compare-data}
SHARDS=${SHARDS:-}
PIN=${PIN:-}
SRV=()
LGEN=()
if [ -n "$PIN" ]; then
  others=""
  for c in $(seq 0 $(( $(nproc --all) - 1 ))); do
    case ",$PIN," in *",$c,"*) ;; *) others="${others:+$others,}$c" ;; esac
  done
  [ -n "$others" ] || { echo "compare-etcd: PIN=$PIN leaves no CPU for the load generator" >&2; exit 2; }
  SRV=(taskset -c "$PIN")
  LGEN=(taskset -c "$others")
  OUT=${OUT:-bench/out/compare-etcd-pin}
  PLOTS=${PLOTS:-bench/plots/pinned}
fi
OUT=${OUT:-bench/out/compare-etcd}
PLOTS=${PLOTS:-bench/plots}
TICK=$(getconf CLK_TCK)
SCENARIOS=${SCENARIOS:-"put-1 put-100 put-1000 range-l range-s txn-put watch"}
if [ "$MEMBERS" != 1 ]; then
  echo "compare-etcd: only single-member runs exist so far" >&2
  exit 2
fi
command -v etcd >/dev/null || { apt-get update -qq && apt-get install -y -qq etcd-server >/dev/null; }
cargo build --release -q -p cairn -p cairn-tools
mkdir -p "$OUT" "$DIR" "$PLOTS"
[ -n "${REPORT:-}" ] || rm -f "$OUT"/*.json "$OUT"/*.cpu
BENCH=target/release/cairn-bench
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start() { # system port -> pid
  local sys=$1 port=$2 peer=$(( $2 + 10 ))
  rm -rf "$DIR/$sys"
  if [ "$sys" = etcd ]; then
    "${SRV[@]}" etcd --name bench --data-dir "$DIR/$sys" \
      --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "bench=http://127.0.0.1:$peer" >"$DIR/$sys.log" 2>&1 &
  else
    "${SRV[@]}" target/release/cairn --data-dir "$DIR/$sys" --listen-client-urls "http://127.0.0.1:$port" \
      ${SHARDS:+--shards "$SHARDS"} >"$DIR/$sys.log" 2>&1 &
  fi
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 300); do
    if $BENCH --endpoints "127.0.0.1:$port" --total 1 range ready >/dev/null 2>&1; then echo "$pid"; return; fi
    sleep 0.1
  done
  echo "$sys did not start; the end of its log:" >&2
  tail -5 "$DIR/$sys.log" >&2
  exit 1
}

stop() { # pid: SIGTERM, then wait until it is gone (start ran in a subshell,
  # so `wait` cannot); the next start reuses the ports.
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}

cpu_ticks() { # pid -> user+system clock ticks so far (all threads)
  awk '{print $14 + $15}' "/proc/$1/stat"
}

scenario() { # endpoint name
  local e=$1 s=$2
  local common=(--endpoints "$e" --key-size 8 --val-size 256)
  local run=("${LGEN[@]}" "$BENCH")
  case "$s" in
    put-1)    "${run[@]}" "${common[@]}" --conns 1 --clients 1 --total 2000 --key-space-size 100000 put ;;
    put-100)  "${run[@]}" "${common[@]}" --conns 10 --clients 100 --total 30000 --key-space-size 100000 put ;;
    put-1000) "${run[@]}" "${common[@]}" --conns 100 --clients 1000 --total 50000 --key-space-size 100000 put ;;
    range-l)  "${run[@]}" "${common[@]}" --conns 10 --clients 100 --total 30000 range foo --consistency l ;;
    range-s)  "${run[@]}" "${common[@]}" --conns 10 --clients 100 --total 30000 range foo --consistency s ;;
    txn-put)  "${run[@]}" "${common[@]}" --conns 10 --clients 100 --total 20000 --key-space-size 1000 txn-put ;;
    # 100 watchers (10 streams x 10) on one key, 200 puts/s: put-to-event latency.
    watch)    "${run[@]}" "${common[@]}" --conns 10 watch-latency --streams 10 --watchers-per-stream 10 --put-total 1000 --put-rate 200 ;;
  esac | tail -1
}

# REPORT=1: only print the table and plots from the results already in $OUT.
[ -n "${REPORT:-}" ] || for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then order="etcd cairn"; else order="cairn etcd"; fi
  for sys in $order; do
    port=23790; [ "$sys" = cairn ] && port=23791
    echo "round $round/$ROUNDS: $sys" >&2
    pid=$(start "$sys" "$port")
    $BENCH --endpoints "127.0.0.1:$port" --total 1 put >/dev/null  # key "foo" for the range scenarios is absent: ranges read an empty key
    for s in $SCENARIOS; do
      c0=$(cpu_ticks "$pid")
      scenario "127.0.0.1:$port" "$s" > "$OUT/$sys.$s.$round.json"
      echo "$(( $(cpu_ticks "$pid") - c0 )) $TICK" > "$OUT/$sys.$s.$round.cpu"
    done
    stop "$pid"
  done
done

python3 - "$OUT" "$ROUNDS" "$SCENARIOS" <<'PY'
import json, statistics, sys, glob
out, rounds, scenarios = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
def load(sys_, s):
    return [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{sys_}.{s}.*.json"))]
def cpu_us(sys_, s, runs):
    # server CPU time per request, per round
    files = sorted(glob.glob(f"{out}/{sys_}.{s}.*.cpu"))
    vals = []
    for f, r in zip(files, runs):
        ticks, hz = open(f).read().split()
        vals.append(int(ticks) / int(hz) * 1e6 / max(r["requests"] + r["errors"], 1))
    return statistics.median(vals) if vals else float("nan")
print(f"| scenario ({rounds} rounds) | etcd req/s median (min..max) | cairn req/s median (min..max) | cairn/etcd | etcd p99 ms | cairn p99 ms | server CPU µs/req etcd / cairn |")
print("|---|---|---|---:|---:|---:|---:|")
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
          f"{statistics.median(x['p99_ms'] for x in e):.1f} | {statistics.median(x['p99_ms'] for x in c):.1f} | "
          f"{cpu_us('etcd', s, e):.0f} / {cpu_us('cairn', s, c):.0f} |")
print()
print("Latency, median over rounds (ms); etcd/cairn > 1 means cairn is faster. For `watch` the latency is put-to-event at a fixed put rate, so its req/s above is that rate, not a result.")
print()
print("| scenario | etcd p50 | cairn p50 | etcd/cairn p50 (per-round min..max) | etcd p99 | cairn p99 | etcd/cairn p99 |")
print("|---|---:|---:|---:|---:|---:|---:|")
for s in scenarios:
    e, c = load("etcd", s), load("cairn", s)
    if not e or not c:
        continue
    def col(rows, k):
        return [x[k] for x in rows]
    r50 = [a / b for a, b in zip(col(e, "p50_ms"), col(c, "p50_ms"))]
    r99 = [a / b for a, b in zip(col(e, "p99_ms"), col(c, "p99_ms"))]
    print(f"| {s} | {statistics.median(col(e, 'p50_ms')):.3f} | {statistics.median(col(c, 'p50_ms')):.3f} | "
          f"{statistics.median(r50):.2f} ({min(r50):.2f}..{max(r50):.2f}) | "
          f"{statistics.median(col(e, 'p99_ms')):.2f} | {statistics.median(col(c, 'p99_ms')):.2f} | {statistics.median(r99):.2f} |")
PY
target/release/bench-plot --results "$OUT" --out "$PLOTS" >&2
