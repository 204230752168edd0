#!/usr/bin/env bash
# Snapshot save of a large store: cairn vs etcd 3.4, same machine, same run,
# alternating rounds (one member each).
#
#   bench/snapshot.sh [ROUNDS] [KEYS] [VALUE_BYTES]
#
# Each round starts etcd and cairn on fresh data dirs (loopback ports), puts
# KEYS keys (default 1,000,000, VALUE_BYTES each, default 256, sequential
# keys, 100 clients over 10 connections), then times `etcdctl snapshot save`
# and samples the server's resident memory (VmRSS, /proc/<pid>/status) every
# 50 ms while it runs: the peak, and the rise over the RSS before the save.
# Then `etcdctl snapshot status` of the file (its size and key count).
# Stops each by PID. Needs target/release/{cairn,cairn-bench} and Debian's
# etcd-server and etcd-client (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
KEYS=${2:-1000000}
VALUE=${3:-256}
DIR=${DIR:-$PWD/target/snapshot-bench-data}
BENCH=target/release/cairn-bench
command -v etcd >/dev/null || apt-get install -y etcd-server >/dev/null
command -v etcdctl >/dev/null || apt-get install -y etcd-client >/dev/null
[ -x target/release/cairn ] && [ -x "$BENCH" ] ||
  cargo build --release --bin cairn --bin cairn-bench
mkdir -p "$DIR"
PID=

start() { # system port
  local sys=$1 port=$2 peer=$(( $2 + 10 ))
  rm -rf "${DIR:?}/$sys"
  if [ "$sys" = etcd ]; then
    # etcd's default quota (2 GiB) would refuse 1M x 256 B with history.
    etcd --name bench --data-dir "$DIR/$sys" --quota-backend-bytes 8589934592 \
      --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "bench=http://127.0.0.1:$peer" >"$DIR/$sys.log" 2>&1 &
  else
    target/release/cairn --data-dir "$DIR/$sys" --quota-backend-bytes 8589934592 \
      --listen-client-urls "http://127.0.0.1:$port" >"$DIR/$sys.log" 2>&1 &
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
  [ -n "$PID" ] || return 0
  kill "$PID" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$PID" 2>/dev/null || true
  PID=
}
trap stop EXIT

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }

echo "| round | system | load s | save s | RSS before MiB | RSS peak MiB | rise MiB | file MiB | totalKey |"
echo "|---|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  order="etcd cairn"
  [ $((round % 2)) = 0 ] && order="cairn etcd"
  for sys in $order; do
    port=23790; [ "$sys" = cairn ] && port=23791
    start "$sys" "$port"
    l0=$(date +%s.%N)
    "$BENCH" --endpoints "127.0.0.1:$port" --conns 10 --clients 100 --total "$KEYS" \
      --key-space-size "$KEYS" --sequential-keys --val-size "$VALUE" put >/dev/null
    l1=$(date +%s.%N)
    sleep 2
    before=$(rss_kb)
    file="$DIR/$sys.snap"
    rm -f "$file"
    s0=$(date +%s.%N)
    ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$port" --command-timeout 600s \
      snapshot save "$file" >/dev/null 2>"$DIR/$sys.save.log" &
    SAVE=$!
    peak=$before
    while kill -0 "$SAVE" 2>/dev/null; do
      r=$(rss_kb); [ "$r" -gt "$peak" ] && peak=$r
      sleep 0.05
    done
    wait "$SAVE"
    s1=$(date +%s.%N)
    status=$(ETCDCTL_API=3 etcdctl snapshot status "$file" -w json)
    total=$(echo "$status" | sed -E 's/.*"totalKey":([0-9]+).*/\1/')
    size=$(stat -c %s "$file")
    stop
    awk -v r="$round" -v s="$sys" -v l0="$l0" -v l1="$l1" -v s0="$s0" -v s1="$s1" \
      -v b="$before" -v p="$peak" -v f="$size" -v t="$total" \
      'BEGIN { printf "| %d | %s | %.1f | %.2f | %.0f | %.0f | %.0f | %.0f | %d |\n", r, s, l1 - l0, s1 - s0, b/1024, p/1024, (p-b)/1024, f/1048576, t }'
  done
done
