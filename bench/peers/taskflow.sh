#!/usr/bin/env bash
# Installs TaskFlow from PyPI into a private virtual environment (under target/, so nothing
# leaves the repository) and runs W1 on its SQLite backend. Prints one Markdown table row.
# Usage: bench/peers/taskflow.sh [FLOWS] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/../.."
flows=${1:-20}
steps=${2:-10}
venv=target/peers/taskflow-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'taskflow==6.5.0' 'SQLAlchemy' 'alembic' >&2
fi
db=$(mktemp -d)/taskflow.db
"$venv/bin/python" bench/peers/taskflow_w1.py "$db" "$flows" "$steps"
rm -rf "$(dirname "$db")"
