#!/usr/bin/env bash
# W1 for every kind of flow (task graph, plan, durable function), two builds side by side in
# one run: rounds alternate between BEFORE and AFTER, so both see the same minutes of a shared
# machine. Each scenario prints its own median of --runs; the figures to compare are the
# medians per build over the rounds.
#
#   bench/before-after.sh BEFORE_BIN AFTER_BIN [ROUNDS]
#
# BEFORE_BIN and AFTER_BIN are flowstate-bench binaries, e.g. one built from a worktree of the
# base commit: git worktree add /tmp/base BASE && (cd /tmp/base && cargo build --release -p
# flowstate-bench), then /tmp/base/target/release/flowstate-bench.
set -euo pipefail
before=${1:?BEFORE_BIN}
after=${2:?AFTER_BIN}
rounds=${3:-3}
dir=${BENCH_DIR:-$(mktemp -d)}
for round in $(seq 1 "$rounds"); do
  for build in before after; do
    bin=$before
    [ "$build" = after ] && bin=$after
    echo "### round $round, $build"
    "$bin" w1-taskgraph --dir "$dir" --runs 3 | grep -E '^\|'
    "$bin" plan --dir "$dir" --runs 3 --sequential 200 --batches 8 | grep -E '^\|'
    "$bin" w1-function --dir "$dir" --runs 3 | grep -E '^\|'
  done
done
