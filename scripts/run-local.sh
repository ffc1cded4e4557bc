#!/usr/bin/env bash
# Runs the main job locally: a Tansu broker (SQLite storage under .local/)
# on 127.0.0.1:9092, the routed topics, and the bridge on 127.0.0.1:8080
# with config/local.toml. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

BROKER_PORT="${BROKER_PORT:-9092}"
mkdir -p .local
cargo build --release --locked

echo "==> starting Tansu on 127.0.0.1:${BROKER_PORT} (log: .local/tansu.log)"
(cd .local && exec tansu broker \
  --listener-url "tcp://127.0.0.1:${BROKER_PORT}" \
  --advertised-listener-url "tcp://127.0.0.1:${BROKER_PORT}" \
  --storage-engine "sqlite://tansu.db") >.local/tansu.log 2>&1 &
TANSU_PID=$!
trap 'kill $TANSU_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/${BROKER_PORT}") 2>/dev/null && break
  sleep 0.1
done

export B24BRIDGE__KAFKA__BROKERS="127.0.0.1:${BROKER_PORT}"
target/release/b24-kafka-bridge --config config/local.toml create-topics --partitions 3

cat <<MSG
==> bridge starting on http://127.0.0.1:8080 . In another terminal:
    target/release/b24-kafka-bridge --config config/local.toml send-sample --url http://127.0.0.1:8080/b24/events
    target/release/b24-kafka-bridge --config config/local.toml tail --topic b24.sign.document-status
MSG
target/release/b24-kafka-bridge --config config/local.toml
