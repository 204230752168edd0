#!/usr/bin/env bash
# cairn vs etcd 3.4, same machine, same run, alternating rounds.
#
#   bench/compare-etcd.sh [ROUNDS] [MEMBERS]
#
# Installs Debian's etcd-server (and, for clusters, etcd-client) if missing,
# builds cairn and cairn-bench in release, then for each round starts etcd
# and cairn (each on a fresh data dir under $DIR, loopback ports, fsync on),
# runs every scenario against each with cairn-bench, and stops them by PID.
# The order alternates (etcd first in odd rounds, cairn first in even ones).
# Prints medians, spread and cairn/etcd ratios as markdown, and plots them
# (bench/plots/*.svg, shown in README).
# MEMBERS (default 1): with more, every round starts an N-member etcd cluster
# and an N-member cairn cluster (names e0.. / c0.., loopback ports, a data dir
# and log per member under $DIR/<system>, --initial-cluster; cairn's peer port
# is UDP), waits until every member reports the same leader (etcdctl endpoint
# status), and cairn-bench spreads its connections over all N client URLs,
# the leader's first (so one-connection scenarios, put-1, talk to the
# leader; etcd's benchmark spreads them over --endpoints the same way).
# Results go to bench/out/compare-etcd-<N>m, plots to bench/plots/<N>-members.
# ETCD_PEER_TLS=1 (MEMBERS > 1): a third system each round, etcd-tls: etcd
# with https:// peer URLs and mutual TLS (certificates from cairn-certs in
# $DIR/pki). cairn's peer traffic (QUIC) is always encrypted, so this is the
# like-for-like etcd; the plain etcd is run too. The order of the systems
# rotates from round to round.
# SCENARIOS=lease-ka keeps 10,000 leases alive from 100 streams (with
# MEMBERS > 1, a keepalive that reaches a follower is forwarded to the
# write leader, as etcd's followers do).
# Env: DIR (data, default target/compare-data; must not be tmpfs), SHARDS
# (cairn --shards; default: cairn's own, one per CPU it may run on), SCENARIOS
# (space-separated subset), PIN (a comma-separated CPU list, e.g. PIN=1: both
# servers run under `taskset -c $PIN` and the load generator on the other
# CPUs, as when clients are on other machines; results then go to
# bench/out/compare-etcd-pin and bench/plots/pinned; with MEMBERS > 1,
# bench/out/compare-etcd-<N>m-pin and bench/plots/<N>-members-pinned).
# Besides req/s and latency, each server's CPU time per request (user+system
# from /proc/<pid>/stat over the scenario; a cluster's is the sum over its
# members) is reported.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
MEMBERS=${2:-1}
DIR=${DIR:-$PWD/target/compare-data}
SHARDS=${SHARDS:-}
PIN=${PIN:-}
PEER_TLS=${ETCD_PEER_TLS:-}
[ "$PEER_TLS" = 0 ] && PEER_TLS=
export -n ETCD_PEER_TLS 2>/dev/null || true  # ours, not etcd's: keep it from the servers
case "$MEMBERS" in
  [1-9]) ;;
  *) echo "compare-etcd: MEMBERS must be 1..9, not '$MEMBERS'" >&2; exit 2 ;;
esac
if [ -n "$PEER_TLS" ] && [ "$MEMBERS" = 1 ]; then
  echo "compare-etcd: ETCD_PEER_TLS needs MEMBERS > 1 (one member has no peers)" >&2
  exit 2
fi
SUFFIX=""; PLOTDIR=""
if [ "$MEMBERS" != 1 ]; then SUFFIX="-${MEMBERS}m"; PLOTDIR="/${MEMBERS}-members"; fi
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
  OUT=${OUT:-bench/out/compare-etcd$SUFFIX-pin}
  PLOTS=${PLOTS:-bench/plots${PLOTDIR:-/pinned}${PLOTDIR:+-pinned}}
fi
OUT=${OUT:-bench/out/compare-etcd$SUFFIX}
PLOTS=${PLOTS:-bench/plots$PLOTDIR}
TICK=$(getconf CLK_TCK)
SCENARIOS=${SCENARIOS:-"put-1 put-100 put-1000 range-l range-s txn-put watch"}
SYSTEMS="etcd cairn"
[ -n "$PEER_TLS" ] && SYSTEMS="etcd etcd-tls cairn"
command -v etcd >/dev/null || { apt-get update -qq && apt-get install -y -qq etcd-server >/dev/null; }
if [ "$MEMBERS" != 1 ]; then
  command -v etcdctl >/dev/null || { apt-get update -qq && apt-get install -y -qq etcd-client >/dev/null; }
fi
# Only the binaries used here (not, e.g., the correctness harness).
cargo build --release -q -p cairn -p cairn-tools --bin cairn --bin cairn-bench --bin bench-plot --bin cairn-certs
mkdir -p "$OUT" "$DIR" "$PLOTS"
[ -n "${REPORT:-}" ] || rm -f "$OUT"/*.json "$OUT"/*.cpu
BENCH=target/release/cairn-bench
PIDS=()    # every server this script started
SPIDS=()   # the running system's members (set by start)
SEPS=""    # its client endpoints, comma-separated, the leader's first (set by start)
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # system port: starts it, sets SPIDS and SEPS
  if [ "$MEMBERS" = 1 ]; then start_one "$@"; else start_cluster "$1"; fi
}

start_one() { # system port
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
  SPIDS=("$pid")
  SEPS="127.0.0.1:$port"
  for _ in $(seq 1 300); do
    if $BENCH --endpoints "127.0.0.1:$port" --total 1 range ready >/dev/null 2>&1; then return; fi
    sleep 0.1
  done
  echo "$sys did not start; the end of its log:" >&2
  tail -5 "$DIR/$sys.log" >&2
  exit 1
}

# Loopback ports of an N-member system: client 23800 + 100*k + i, peer (TCP
# for etcd, UDP for cairn) 23850 + 100*k + i, k = 0 etcd, 1 etcd-tls, 2 cairn.
cluster_base() { case "$1" in etcd) echo 23800 ;; etcd-tls) echo 23900 ;; cairn) echo 24000 ;; esac; }

make_pki() { # certificates for etcd-tls's members, once per run
  PKI=$DIR/pki
  rm -rf "$PKI"
  target/release/cairn-certs ca --dir "$PKI" >/dev/null
  for i in $(seq 0 $((MEMBERS - 1))); do
    target/release/cairn-certs member --dir "$PKI" --name "e$i" --hosts localhost,127.0.0.1 >/dev/null
  done
}

start_cluster() { # system
  local sys=$1 base scheme=http prefix=c initial="" eps="" i
  base=$(cluster_base "$sys")
  case "$sys" in etcd) prefix=e ;; etcd-tls) prefix=e; scheme=https ;; esac
  rm -rf "${DIR:?}/$sys"
  mkdir -p "$DIR/$sys"
  for i in $(seq 0 $((MEMBERS - 1))); do
    initial="${initial:+$initial,}$prefix$i=$scheme://127.0.0.1:$((base + 50 + i))"
    eps="${eps:+$eps,}127.0.0.1:$((base + i))"
  done
  SPIDS=()
  for i in $(seq 0 $((MEMBERS - 1))); do
    local client="http://127.0.0.1:$((base + i))" peer="$scheme://127.0.0.1:$((base + 50 + i))"
    if [ "$sys" = cairn ]; then
      "${SRV[@]}" target/release/cairn --name "c$i" --data-dir "$DIR/$sys/c$i" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "$initial" --initial-cluster-token "bench-$sys" \
        ${SHARDS:+--shards "$SHARDS"} >"$DIR/$sys/c$i.log" 2>&1 &
    else
      local tls=()
      [ "$sys" = etcd-tls ] && tls=(--peer-cert-file "$PKI/e$i.pem" --peer-key-file "$PKI/e$i-key.pem"
        --peer-trusted-ca-file "$PKI/ca.pem" --peer-client-cert-auth)
      "${SRV[@]}" etcd --name "e$i" --data-dir "$DIR/$sys/e$i" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "$initial" --initial-cluster-token "bench-$sys" \
        --initial-cluster-state new "${tls[@]}" >"$DIR/$sys/e$i.log" 2>&1 &
    fi
    PIDS+=("$!")
    SPIDS+=("$!")
  done
  # Every member must report the same leader, itself one of them.
  local deadline=$((SECONDS + 60))
  while [ "$SECONDS" -lt "$deadline" ]; do
    for i in "${!SPIDS[@]}"; do
      kill -0 "${SPIDS[$i]}" 2>/dev/null && continue
      echo "$sys member $prefix$i exited while starting; the end of its log:" >&2
      tail -5 "$DIR/$sys/$prefix$i.log" >&2
      exit 1
    done
    if SEPS=$(leader_first "$eps"); then return; fi
    sleep 0.2
  done
  echo "$sys: no common leader within 60 s; the ends of the members' logs:" >&2
  for i in $(seq 0 $((MEMBERS - 1))); do tail -3 "$DIR/$sys/$prefix$i.log" >&2; done
  exit 1
}

leader_first() { # endpoints -> the same, the leader's first; fails unless
  # every member answers Status and all name the same leader, one of them.
  etcdctl --endpoints "$1" --dial-timeout 1s --command-timeout 2s endpoint status -w json 2>/dev/null |
    python3 -c '
import json, sys
n, st = int(sys.argv[1]), json.load(sys.stdin)
leaders = {s["Status"].get("leader", 0) for s in st}
if len(st) != n or len(leaders) != 1 or 0 in leaders:
    sys.exit(1)
lead = [s["Endpoint"] for s in st if s["Status"]["header"]["member_id"] in leaders]
if len(lead) != 1:
    sys.exit(1)
print(",".join(lead + [s["Endpoint"] for s in st if s["Endpoint"] != lead[0]]))
' "$MEMBERS"
}

stop() { # pids: SIGTERM to each, then wait until all are gone; the next
  # start reuses the ports.
  local p
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do
    for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
}

cpu_ticks() { # pids -> user+system clock ticks so far (all threads, summed)
  local p t=0
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
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
    # 10,000 leases granted (not timed), then kept alive by 100 streams; the
    # CPU column includes the grants.
    lease-ka) "${run[@]}" "${common[@]}" --conns 10 --clients 100 --total 50000 lease-keepalive --leases 10000 --ttl 600 ;;
  esac | tail -1
}

[ -z "${REPORT:-}" ] && [ -n "$PEER_TLS" ] && make_pki
# REPORT=1: only print the table and plots from the results already in $OUT.
[ -n "${REPORT:-}" ] || for round in $(seq 1 "$ROUNDS"); do
  # etcd first in odd rounds, cairn first in even ones; with etcd-tls, the
  # three rotate.
  read -r -a all <<<"$SYSTEMS"
  k=$(( (round - 1) % ${#all[@]} ))
  order="${all[*]:$k} ${all[*]:0:$k}"
  for sys in $order; do
    port=23790; [ "$sys" = cairn ] && port=23791
    echo "round $round/$ROUNDS: $sys" >&2
    start "$sys" "$port"
    # key "foo" for the range scenarios is absent: ranges read an empty key.
    # This put also waits until the system takes writes (a new cluster's
    # shards may still be electing).
    for try in $(seq 1 20); do
      $BENCH --endpoints "$SEPS" --total 1 put >/dev/null 2>&1 && break
      [ "$try" = 20 ] && { echo "$sys takes no writes" >&2; exit 1; }
      sleep 0.5
    done
    for s in $SCENARIOS; do
      c0=$(cpu_ticks "${SPIDS[@]}")
      scenario "$SEPS" "$s" > "$OUT/$sys.$s.$round.json"
      echo "$(( $(cpu_ticks "${SPIDS[@]}") - c0 )) $TICK" > "$OUT/$sys.$s.$round.cpu"
    done
    if [ "$MEMBERS" = 1 ]; then
      stop "${SPIDS[@]}"
    else
      now=$(leader_first "$SEPS" || echo none)
      [ "${now%%,*}" = "${SEPS%%,*}" ] ||
        echo "warning: $sys's leader moved during round $round (${SEPS%%,*} -> ${now%%,*})" >&2
      # The followers first, then the leader: etcd's leader, stopped with
      # the others, hands its leadership to one that is stopping too and
      # waits seconds for it.
      lead=-1 first=${now%%,*}
      [ "$now" = none ] || lead=$(( ${first##*:} - $(cluster_base "$sys") ))
      rest=()
      for i in "${!SPIDS[@]}"; do [ "$i" = "$lead" ] || rest+=("${SPIDS[$i]}"); done
      stop "${rest[@]}"
      [ "$lead" -lt 0 ] || stop "${SPIDS[$lead]}"
    fi
  done
done

python3 - "$OUT" "$ROUNDS" "$SCENARIOS" "$MEMBERS" <<'PY'
import json, statistics, sys, glob
out, rounds, scenarios, members = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), int(sys.argv[4])
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
def table(base):
    # cairn against one etcd variant (etcd, or etcd-tls with TLS peer URLs)
    B = base
    cpu_head = "server CPU µs/req" if members == 1 else "server CPU µs/req (sum of members)"
    print(f"| scenario ({rounds} rounds) | {B} req/s median (min..max) | cairn req/s median (min..max) | cairn/{B} | {B} p99 ms | cairn p99 ms | {cpu_head} {B} / cairn |")
    print("|---|---|---|---:|---:|---:|---:|")
    for s in scenarios:
        e, c = load(B, s), load("cairn", s)
        if not e or not c:
            continue
        er, cr = [x["rps"] for x in e], [x["rps"] for x in c]
        ratios = [a / b for a, b in zip(cr, er)]
        errs = sum(x["errors"] for x in c) + sum(x["errors"] for x in e)
        note = f" ({errs} errors)" if errs else ""
        print(f"| {s}{note} | {statistics.median(er):,.0f} ({min(er):,.0f}..{max(er):,.0f}) | "
              f"{statistics.median(cr):,.0f} ({min(cr):,.0f}..{max(cr):,.0f}) | {statistics.median(ratios):.2f} | "
              f"{statistics.median(x['p99_ms'] for x in e):.1f} | {statistics.median(x['p99_ms'] for x in c):.1f} | "
              f"{cpu_us(B, s, e):.0f} / {cpu_us('cairn', s, c):.0f} |")
    print()
    print(f"Latency, median over rounds (ms); {B}/cairn > 1 means cairn is faster. For `watch` the latency is put-to-event at a fixed put rate, so its req/s above is that rate, not a result.")
    print()
    print(f"| scenario | {B} p50 | cairn p50 | {B}/cairn p50 (per-round min..max) | {B} p99 | cairn p99 | {B}/cairn p99 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for s in scenarios:
        e, c = load(B, s), load("cairn", s)
        if not e or not c:
            continue
        def col(rows, k):
            return [x[k] for x in rows]
        r50 = [a / b for a, b in zip(col(e, "p50_ms"), col(c, "p50_ms"))]
        r99 = [a / b for a, b in zip(col(e, "p99_ms"), col(c, "p99_ms"))]
        print(f"| {s} | {statistics.median(col(e, 'p50_ms')):.3f} | {statistics.median(col(c, 'p50_ms')):.3f} | "
              f"{statistics.median(r50):.2f} ({min(r50):.2f}..{max(r50):.2f}) | "
              f"{statistics.median(col(e, 'p99_ms')):.2f} | {statistics.median(col(c, 'p99_ms')):.2f} | {statistics.median(r99):.2f} |")
bases = [b for b in ("etcd", "etcd-tls") if glob.glob(f"{out}/{b}.*.json")] or ["etcd"]
if members > 1:
    print(f"{members}-member clusters on one machine (loopback); cairn-bench's connections spread over all members' client URLs, the leader's first. "
          "etcd: plain http:// peer URLs; etcd-tls: https:// peer URLs with mutual TLS; cairn's peer traffic (QUIC) is always encrypted.")
    print()
for i, b in enumerate(bases):
    if i:
        print()
    table(b)
PY
target/release/bench-plot --results "$OUT" --out "$PLOTS" >&2
