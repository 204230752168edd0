#!/usr/bin/env bash
# KV throughput during an Authenticate flood (wrong passwords): cairn vs
# etcd 3.4, same machine, same run, alternating rounds (one member each).
#
#   bench/auth-flood.sh [ROUNDS] [SECONDS]
#
# Each round starts etcd and cairn on fresh data dirs (loopback ports,
# default bcrypt cost 10 on both, simple tokens), enables auth (user root
# with role root, via etcdctl), then measures on the same server:
#   baseline: `cairn-bench --user root:$PW put` for SECONDS (default 15);
#   flood:    the same put load while a second cairn-bench runs
#             `authenticate --name root --password wrong` from FLOOD_CLIENTS
#             clients (default 64) over FLOOD_CONNS connections (default 4),
#             for SECS, starting 1 s after the put client (which logs in
#             first), so it covers the put window but its first second.
# The order of baseline and flood alternates from round to round, as does
# the order of the systems. Each server is stopped by PID.
# Prints a row per run, then medians, min–max and flood/baseline ratios as
# markdown. Raw JSON lines go to $DIR/<round>-<system>-<phase>.json.
# Env: DIR (default target/auth-flood-data), PUT_CLIENTS (default 16),
# PUT_CONNS (default 1), THREADS (each cairn-bench's runtime threads,
# default 1), FLOOD_CLIENTS, FLOOD_CONNS.
# Needs Debian's etcd-server and etcd-client (installed if missing); builds
# target/release/{cairn,cairn-bench} if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-15}
DIR=${DIR:-$PWD/target/auth-flood-data}
PUT_CLIENTS=${PUT_CLIENTS:-16}
PUT_CONNS=${PUT_CONNS:-1}
THREADS=${THREADS:-1}
FLOOD_CLIENTS=${FLOOD_CLIENTS:-64}
FLOOD_CONNS=${FLOOD_CONNS:-4}
PW=bench-root-pw
BENCH=target/release/cairn-bench
command -v etcd >/dev/null || apt-get install -y etcd-server >/dev/null
command -v etcdctl >/dev/null || apt-get install -y etcd-client >/dev/null
[ -x target/release/cairn ] && [ -x "$BENCH" ] ||
  cargo build --release -q -p cairn -p cairn-tools --bin cairn --bin cairn-bench
mkdir -p "$DIR"
: >"$DIR/rows.md"
PID=
FLOOD_PID=

start() { # system port
  local sys=$1 port=$2 peer=$(( $2 + 10 ))
  rm -rf "${DIR:?}/$sys"
  if [ "$sys" = etcd ]; then
    etcd --name bench --data-dir "$DIR/$sys" \
      --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "bench=http://127.0.0.1:$peer" --auth-token simple --bcrypt-cost 10 \
      >"$DIR/$sys.log" 2>&1 &
  else
    target/release/cairn --data-dir "$DIR/$sys" --listen-client-urls "http://127.0.0.1:$port" \
      --auth-token simple --bcrypt-cost 10 >"$DIR/$sys.log" 2>&1 &
  fi
  PID=$!
  for _ in $(seq 1 300); do
    "$BENCH" --endpoints "127.0.0.1:$port" --total 1 range ready >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "$sys did not start" >&2
  exit 1
}

stop_pid() { # pid
  [ -n "$1" ] || return 0
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}
cleanup() { stop_pid "$FLOOD_PID"; stop_pid "$PID"; }
trap cleanup EXIT

enable_auth() { # port
  local ctl=(etcdctl --endpoints "127.0.0.1:$1" --dial-timeout 5s --command-timeout 10s)
  "${ctl[@]}" user add "root:$PW" --interactive=false >/dev/null
  "${ctl[@]}" user grant-role root root >/dev/null
  "${ctl[@]}" auth enable >/dev/null
  # Auth is on: a put without a token must be refused, one with it accepted.
  if "$BENCH" --endpoints "127.0.0.1:$1" --total 1 put >/dev/null 2>&1; then
    echo "auth enable did not take: a put without a token succeeded" >&2
    exit 1
  fi
  "$BENCH" --endpoints "127.0.0.1:$1" --user "root:$PW" --total 1 put >/dev/null
}

put_load() { # port out
  "$BENCH" --threads "$THREADS" --endpoints "127.0.0.1:$1" --user "root:$PW" \
    --conns "$PUT_CONNS" --clients "$PUT_CLIENTS" --duration "$SECS" \
    --key-space-size 1000 --val-size 256 put 2>/dev/null | tail -1 >"$2"
}

for round in $(seq 1 "$ROUNDS"); do
  order="etcd cairn"
  [ $((round % 2)) = 0 ] && order="cairn etcd"
  phases="baseline flood"
  [ $((round % 2)) = 0 ] && phases="flood baseline"
  for sys in $order; do
    port=23890; [ "$sys" = cairn ] && port=23891
    start "$sys" "$port"
    enable_auth "$port"
    for phase in $phases; do
      out="$DIR/$round-$sys-$phase.json"
      if [ "$phase" = flood ]; then
        # The put client logs in first: a login queued behind the flood waits
        # for it (or, on cairn with more than 65 flooders, is refused).
        put_load "$port" "$out" &
        local_put=$!
        sleep 1
        "$BENCH" --threads "$THREADS" --endpoints "127.0.0.1:$port" --conns "$FLOOD_CONNS" \
          --clients "$FLOOD_CLIENTS" --duration "$SECS" \
          authenticate --name root --password wrong 2>/dev/null | tail -1 >"$DIR/$round-$sys-logins.json" &
        FLOOD_PID=$!
        wait "$local_put"
        wait "$FLOOD_PID"
        FLOOD_PID=
      else
        put_load "$port" "$out"
      fi
      sleep 1
    done
    stop_pid "$PID"
    PID=
    jq -r --arg r "$round" --arg s "$sys" -s '
      "| \($r) | \($s) | \(.[0].rps | floor) | \(.[1].rps | floor) | \(.[2].answered_per_sec | floor) | \(.[2].requests) | \(.[2].error_kinds | to_entries | map("\(.value) × \(.key)") | join("; ")) |"' \
      "$DIR/$round-$sys-baseline.json" "$DIR/$round-$sys-flood.json" "$DIR/$round-$sys-logins.json" \
      >>"$DIR/rows.md"
    tail -1 "$DIR/rows.md" >&2
  done
done

echo "| round | system | put/s baseline | put/s during flood | flood logins/s answered | flood logins accepted | flood refusals |"
echo "|---|---|---|---|---|---|---|"
tail -n $((ROUNDS * 2)) "$DIR/rows.md"
echo
python3 - "$DIR" "$ROUNDS" <<'PY'
import json, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
def load(r, s, p):
    with open(f"{d}/{r}-{s}-{p}.json") as f:
        return json.load(f)
print("| system | put/s baseline, median (min–max) | put/s during flood, median (min–max) | during/baseline (median) | flood logins/s answered, median (min–max) |")
print("|---|---|---|---|---|")
for s in ("cairn", "etcd"):
    b = [load(r, s, "baseline")["rps"] for r in range(1, rounds + 1)]
    f = [load(r, s, "flood")["rps"] for r in range(1, rounds + 1)]
    l = [load(r, s, "logins")["answered_per_sec"] for r in range(1, rounds + 1)]
    m = lambda x: f"{statistics.median(x):,.0f} ({min(x):,.0f}–{max(x):,.0f})"
    ratio = statistics.median(f) / statistics.median(b)
    per_round = ", ".join(f"{fi / bi:.2f}" for bi, fi in zip(b, f))
    print(f"| {s} | {m(b)} | {m(f)} | {ratio:.2f} (per round: {per_round}) | {m(l)} |")
PY
