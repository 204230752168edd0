#!/usr/bin/env bash
# WAL vs the disk's own limits, measured in one run on one directory.
#
#   bench/wal-vs-fio.sh [DIR] [RUNS]
#
# DIR must be on the filesystem under test (default: target/walbench-data;
# not tmpfs: no O_DIRECT there). RUNS (default 3) rounds, each round running
# every case once, interleaved, so slow phases of a shared machine hit all
# cases alike. Prints a markdown table of medians, spread (min..max) and the
# three target ratios of the WAL issue for each WAL IO mode in IOS (default:
# all three; see `walbench --help` for what `--io` chooses).
# Needs fio (installed if missing) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-$PWD/target/walbench-data}
RUNS=${2:-3}
SECS=${SECS:-5}
# walbench and fio run pinned to the same CPU: on a VM one CPU may take more
# interrupts than another (seen here: ~30% fewer fsyncs/s on CPU 0).
CPU=${CPU:-$(( $(nproc) - 1 ))}
OUT=${OUT:-bench/out/wal-vs-fio}
IOS=${IOS:-ring dsync blocking}
mkdir -p "$DIR" "$OUT"
rm -f "$OUT"/*.json
if ! command -v fio >/dev/null; then
  apt-get update -qq && apt-get install -y -qq fio >/dev/null
fi
cargo build --release -q -p cairn-tools
WB="target/release/walbench --cpu $CPU"

for run in $(seq 1 "$RUNS"); do
  echo "round $run/$RUNS" >&2
  $WB --dir "$DIR/wal" --mode raw --writers 1 --record-bytes 4096 --seconds "$SECS" | tail -1 > "$OUT/raw-1x4k.$run.json"
  for io in $IOS; do
    $WB --dir "$DIR/wal" --io "$io" --mode each --writers 1 --record-bytes 4096 --seconds "$SECS" | tail -1 > "$OUT/each-1x4k-$io.$run.json"
  done
  fio --name=fsync4k --directory="$DIR" --filename=fio-4k --rw=write --bs=4k --direct=1 --fdatasync=1 \
      --size=64M --runtime="$SECS" --time_based --cpus_allowed="$CPU" --output-format=json > "$OUT/fio-4k-fdatasync.$run.json"
  for io in $IOS; do
    $WB --dir "$DIR/wal" --io "$io" --mode group --writers 64 --record-bytes 256 --seconds "$SECS" | tail -1 > "$OUT/group-64x256-$io.$run.json"
    $WB --dir "$DIR/wal" --io "$io" --mode each --writers 64 --record-bytes 256 --seconds "$SECS" | tail -1 > "$OUT/each-64x256-$io.$run.json"
  done
  for io in $IOS; do
    $WB --dir "$DIR/wal" --io "$io" --mode group --writers 16 --record-bytes 65536 --seconds "$SECS" | tail -1 > "$OUT/group-16x64k-$io.$run.json"
  done
  fio --name=seq1m --directory="$DIR" --filename=fio-1m --rw=write --bs=1m --direct=1 --ioengine=io_uring \
      --end_fsync=1 --size=2G --cpus_allowed="$CPU" --output-format=json > "$OUT/fio-1m-seq.$run.json"
done
rm -f "$DIR/fio-4k" "$DIR/fio-1m"

python3 - "$OUT" "$RUNS" $IOS <<'PY'
import json, statistics, sys, glob
out, runs, ios = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def load(name):
    return [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{name}.*.json"))]
def wal(name, key):
    return [r[key] for r in load(name)]
def fio(name, key):
    return [r["jobs"][0]["write"][key] for r in load(name)]
FIO4K, FIO1M, RAW = "fio 4 KiB O_DIRECT + fdatasync IOPS", "fio 1 MiB O_DIRECT io_uring MB/s", "walbench raw (bare glommio DmaFile) 4 KiB write+fdatasync/s"
rows = {
  FIO4K: fio("fio-4k-fdatasync", "iops"),
  FIO1M: [b / 1e6 for b in fio("fio-1m-seq", "bw_bytes")],
  RAW: wal("raw-1x4k", "appends_per_sec"),
}
for io in ios:
    rows[f"`{io}`: each 1×4 KiB appends/s"] = wal(f"each-1x4k-{io}", "appends_per_sec")
    rows[f"`{io}`: each 1×4 KiB p99 µs"] = wal(f"each-1x4k-{io}", "p99_us")
    rows[f"`{io}`: group 64×256 B appends/s"] = wal(f"group-64x256-{io}", "appends_per_sec")
    rows[f"`{io}`: group 64×256 B p99 µs"] = wal(f"group-64x256-{io}", "p99_us")
    rows[f"`{io}`: each 64×256 B appends/s"] = wal(f"each-64x256-{io}", "appends_per_sec")
    rows[f"`{io}`: group 16×64 KiB MB/s"] = wal(f"group-16x64k-{io}", "mb_per_sec")
print(f"| measurement ({runs} rounds) | median | min .. max |")
print("|---|---:|---|")
for k, v in rows.items():
    print(f"| {k} | {statistics.median(v):,.0f} | {min(v):,.0f} .. {max(v):,.0f} |")
def ratio(a, b):
    # per-round ratios (same round = same machine conditions), then the median
    ra = [x / y for x, y in zip(rows[a], rows[b])]
    return statistics.median(ra), min(ra), max(ra)
print()
print("| `--io` | target | ratio (median of per-round ratios) | min .. max | goal |")
print("|---|---|---:|---|---|")
for io in ios:
    for name, a, b, goal in [
        ("group 64×256 B vs each 64×256 B", f"`{io}`: group 64×256 B appends/s", f"`{io}`: each 64×256 B appends/s", "≥ 20×"),
        ("group 16×64 KiB vs fio 1 MiB seq", f"`{io}`: group 16×64 KiB MB/s", FIO1M, "≥ 0.70"),
        ("each 1×4 KiB vs fio 4 KiB fdatasync", f"`{io}`: each 1×4 KiB appends/s", FIO4K, "≥ 0.80"),
    ]:
        m, lo, hi = ratio(a, b)
        print(f"| {io} | {name} | {m:.2f} | {lo:.2f} .. {hi:.2f} | {goal} |")
m, lo, hi = ratio(RAW, FIO4K)
print(f"| (context) | raw glommio 4 KiB write+fdatasync vs fio 4 KiB fdatasync | {m:.2f} | {lo:.2f} .. {hi:.2f} | — |")
PY
