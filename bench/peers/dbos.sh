#!/usr/bin/env bash
# Installs DBOS Transact (Python) from PyPI into a private virtual environment (under target/,
# so nothing leaves the repository) and runs W1 on it against the local PostgreSQL. DBOS gets
# a database of its own (dbos_w1_bench, dropped before and after) on the server named by
# FLOWSTATE_TEST_PG, so it never touches flowstate's tables. Prints one Markdown table row per
# mode: sequential, and CONCURRENT workflows at once when CONCURRENT > 0.
# Usage: bench/peers/dbos.sh [FLOWS] [STEPS] [CONCURRENT]   (defaults 20 10 0)
set -euo pipefail
cd "$(dirname "$0")/../.."
flows=${1:-20}
steps=${2:-10}
concurrent=${3:-0}
url=${FLOWSTATE_TEST_PG:-postgres://postgres@127.0.0.1:5432/test}
venv=target/peers/dbos-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'dbos==3.4.0' >&2
fi
db=dbos_w1_bench
export PGOPTIONS=--client-min-messages=warning  # no NOTICE when there is nothing to drop
drop() { psql "$url" -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >&2; }
drop
psql "$url" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db" >&2
trap drop EXIT
"$venv/bin/python" bench/peers/dbos_w1.py "${url%/*}/$db" "$flows" "$steps" "$concurrent"
