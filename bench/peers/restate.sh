#!/usr/bin/env bash
# The load of `flowstate-bench http` against Restate: installs restate-server from npm (under
# target/, so nothing leaves the repository), builds the peer project bench/peers/restate-svc
# (a one-step Restate service, the peer of our one-step plan `echo`, and a load generator built
# like crates/bench/src/http.rs), starts the server with its data under target/peers/restate/
# (cleaned per run), registers the service through the admin API, and has CLIENTS keep-alive
# HTTP/1.1 clients send one-way invocations (`/Echo/run/send`) for SECONDS; then waits until
# Restate has completed every invocation. Prints one Markdown table row with the columns of
# our row. Restate runs with its defaults (single node, replicated loglet, WAL fsync on).
# Uses ports 8080 (ingress), 9070 (admin), 5122 (node) and 9080 (service): they must be free.
# Usage: bench/peers/restate.sh [SECONDS] [CLIENTS]   (defaults 5 64)
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-5}
clients=${2:-64}
version=1.7.12
peer=target/peers/restate
server=$peer/node_modules/.bin/restate-server
if ! "$server" --version 2>/dev/null | grep -qx "restate-server $version"; then
  npm install --prefix "$peer" --no-audit --no-fund --save-exact --loglevel=error \
    "@restatedev/restate-server@$version" >&2
fi
CARGO_TARGET_DIR=$PWD/$peer/target cargo build --quiet --release --locked \
  --manifest-path bench/peers/restate-svc/Cargo.toml >&2
bin=$peer/target/release

for port in 8080 9070 5122 9080; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "error: port $port is in use" >&2
    exit 1
  fi
done

data=$PWD/$peer/data
log=$PWD/$peer/server.log
rm -rf "$data"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

RESTATE_DISABLE_TELEMETRY=true "$server" --no-logo --listen-mode tcp --base-dir "$data" \
  --node-name bench >"$log" 2>&1 &
pids+=($!)
"$bin/svc" 127.0.0.1:9080 >>"$log" 2>&1 &
pids+=($!)

up=
for _ in $(seq 1 300); do
  if curl -fsS http://127.0.0.1:9070/health >/dev/null 2>&1 \
    && curl -fsS http://127.0.0.1:8080/restate/health >/dev/null 2>&1; then
    up=1
    break
  fi
  sleep 0.1
done
[ -n "$up" ] || { echo "error: restate-server did not come up, see $log" >&2; exit 1; }
curl -fsS http://127.0.0.1:9070/deployments -H 'content-type: application/json' \
  -d '{"uri":"http://127.0.0.1:9080"}' >/dev/null

"$bin/load" "$seconds" "$clients" http://127.0.0.1:8080 http://127.0.0.1:9070
