#!/usr/bin/env bash
# The CPU a server spends on idle leases: cairn vs etcd 3.4, same machine,
# same run, alternating rounds (one member each).
#
#   bench/lease-idle.sh [ROUNDS] [LEASES] [SECONDS]
#
# Each round starts etcd and cairn on fresh data dirs (loopback ports), grants
# LEASES leases (default 100,000, TTL 3600 s, from 100 clients over 10
# connections; the grant time is printed), then reads the server's CPU time
# (user+system, /proc/<pid>/stat) over SECONDS (default 30) with no client
# traffic: what keeping that many leases costs while nothing happens. Stops
# each by PID. Needs target/release/{cairn,cairn-bench} and Debian's
# etcd-server (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
LEASES=${2:-100000}
SECONDS_IDLE=${3:-30}
DIR=${DIR:-$PWD/target/lease-idle-data}
BENCH=target/release/cairn-bench
command -v etcd >/dev/null || apt-get install -y etcd-server >/dev/null
[ -x target/release/cairn ] && [ -x "$BENCH" ] ||
  cargo build --release --bin cairn --bin cairn-bench
mkdir -p "$DIR"
TICK=$(getconf CLK_TCK)
PID=

start() { # system port
  local sys=$1 port=$2 peer=$(( $2 + 10 ))
  rm -rf "${DIR:?}/$sys"
  if [ "$sys" = etcd ]; then
    etcd --name bench --data-dir "$DIR/$sys" \
      --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "bench=http://127.0.0.1:$peer" >"$DIR/$sys.log" 2>&1 &
  else
    target/release/cairn --data-dir "$DIR/$sys" --listen-client-urls "http://127.0.0.1:$port" \
      >"$DIR/$sys.log" 2>&1 &
  fi
  PID=$!
  for _ in $(seq 1 300); do
    "$BENCH" --endpoints "127.0.0.1:$port" --total 1 range ready >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "$sys did not start" >&2
  exit 1
}

stop() {
  kill "$PID" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$PID" 2>/dev/null || true
}
trap stop EXIT

ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }

echo "| round | system | grant s | CPU ms over ${SECONDS_IDLE} s idle | CPU % |"
echo "|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  order="etcd cairn"
  [ $((round % 2)) = 0 ] && order="cairn etcd"
  for sys in $order; do
    port=23790; [ "$sys" = cairn ] && port=23791
    start "$sys" "$port"
    g0=$(date +%s.%N)
    "$BENCH" --endpoints "127.0.0.1:$port" --conns 10 --clients 100 --total 1 \
      lease-keepalive --leases "$LEASES" --ttl 3600 >/dev/null
    g1=$(date +%s.%N)
    sleep 2 # let the grants' writes settle
    c0=$(ticks)
    sleep "$SECONDS_IDLE"
    c1=$(ticks)
    stop
    awk -v r="$round" -v s="$sys" -v g0="$g0" -v g1="$g1" -v t=$((c1 - c0)) \
      -v hz="$TICK" -v secs="$SECONDS_IDLE" \
      'BEGIN { printf "| %d | %s | %.1f | %.0f | %.2f |\n", r, s, g1 - g0, t * 1000 / hz, t * 100 / hz / secs }'
  done
done
