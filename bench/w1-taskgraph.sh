#!/usr/bin/env bash
# W1 as task graphs, flowstate and TaskFlow side by side in one run (figures for BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p flowstate-bench
./target/release/flowstate-bench w1-taskgraph --dir "${BENCH_DIR:-/tmp}"
echo
echo "same, tokio current-thread runtime:"
./target/release/flowstate-bench --current-thread w1-taskgraph --dir "${BENCH_DIR:-/tmp}" | tail -2
echo
echo "peer (same machine, same run):"
bench/peers/taskflow.sh "${TASKFLOW_FLOWS:-20}" 10
