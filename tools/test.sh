#!/usr/bin/env bash
# Installs what the tests need (Debian packages), then runs every test.
# README's test command; .ci/run calls it. Run as root on Debian, or with the
# packages below already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the build and tests use: a C compiler for glommio's liburing
# build; etcd 3.4 (etcd-server) that the load generator's tests drive, and its
# etcdctl (etcd-client).
need=()
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v make >/dev/null || need+=(make)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
# The correctness harness: a loop-mounted ext4 for the data dir (power loss,
# disk full).
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v mount >/dev/null || need+=(mount)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tools/test.sh: please install: ${need[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

# glommio needs locked memory for its io_uring buffers (1 MiB per executor).
if [ "$(ulimit -l)" != unlimited ] && [ "$(ulimit -l)" -lt 4096 ]; then
  ulimit -l 8192 2>/dev/null || echo "warning: RLIMIT_MEMLOCK is $(ulimit -l) KiB; see LINUX_REQUIREMENTS.md" >&2
fi

# One build profile (dev) for everything; benches run once each in test mode.
# Long soaks are opt-in: PROPTEST_CASES=5000 tools/test.sh
# The failpoints feature is on in the test build (one build: the integration
# tests run the same binary the correctness harness drives).
# The network namespace tests (harness::netns) fail instead of skipping.
export CAIRN_NETNS_TESTS=1
# --no-fail-fast: a failing suite does not hide how the others fare.
cargo test --workspace --all-targets --locked --no-fail-fast --features cairn/failpoints "$@"
