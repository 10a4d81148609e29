#!/usr/bin/env bash
# The test command: installs what the tests need (Debian packages), builds, runs every test tier
# (unit, unit under ASan+UBSan, fuzz corpus replay, arm64 under qemu, integration, cluster) and
# ends with "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")"
tools/install-deps test
exec tools/run-tests
