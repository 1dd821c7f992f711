#!/usr/bin/env bash
# W1 on PostgreSQL: flowstate with 1, 2 and 3 engine processes, and DBOS Transact on the same
# server in the same run (figures for BENCHMARKS.md). Needs the local PostgreSQL
# (FLOWSTATE_TEST_PG, default postgres://postgres@127.0.0.1:5432/test) and psql.
set -euo pipefail
cd "$(dirname "$0")/.."
url=${FLOWSTATE_TEST_PG:-postgres://postgres@127.0.0.1:5432/test}
cargo build --release -q -p flowstate-bench
./target/release/flowstate-bench w1-postgres --url "$url" --runs "${RUNS:-3}"
echo
echo "peer (same machine, same database server, same run):"
bench/peers/dbos.sh "${DBOS_FLOWS:-200}" 10 "${DBOS_CONCURRENT:-256}"
