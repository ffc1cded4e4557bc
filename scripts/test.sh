#!/usr/bin/env bash
# The test command: installs what the tests need, then runs unit and
# integration tests (the integration tests start their own Tansu brokers).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --locked "$@"
