#!/usr/bin/env bash
# The run command: installs missing build dependencies, builds, and starts a single node on port
# 1109 with data under ./ayder-data and the development token `dev`. Extra arguments are passed to
# ./ayder (e.g. ./run.sh --port 7001).
set -euo pipefail
cd "$(dirname "$0")"
tools/install-deps build
make -j"$(nproc 2>/dev/null || echo 2)" ayder >/dev/null
export RF_BEARER_TOKENS="${RF_BEARER_TOKENS:-dev}"
exec ./ayder --port 1109 --data-dir ./ayder-data "$@"
