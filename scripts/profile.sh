#!/usr/bin/env bash
# Profiles the release bridge under load: Tansu (memory storage) + bridge +
# wrk at CONNS connections (default 64) for 20 s; prints the CPU split
# between bridge and Tansu over a 12 s window and wrk's RESULT line, and with
# PERF=1 records `perf record -g` of the bridge (report: perf report -i
# $WORK/perf.data --stdio). Knobs: CONNS, LEVEL (log level, info),
# LINGER (linger.ms, 1), PROPS (more librdkafka properties as TOML pairs,
# e.g. '"max.in.flight.requests.per.connection" = "1"'), WORKERS (0 = one
# per core), PERF (0), WORK dir (keeps the logs and the bridge's /metrics).
# Used for the "Profile" section of docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
BIN="$PWD/target/release/b24-kafka-bridge"
LUA="${LUA:-$PWD/../shared/bench/sign-event.lua}"
WORK="${WORK:-$(mktemp -d /tmp/b24-profile.XXXXXX)}"
command -v wrk >/dev/null || { echo "wrk missing: scripts/bench.sh installs it" >&2; exit 1; }
[ -x "$BIN" ] || cargo build --release --locked
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BP=$(port); HP=$(port)
export MEMBER_ID=0123456789abcdef0123456789abcdef APP_TOKEN=apptoken0123456789abcdef01234567
cat > "$WORK/cfg.toml" <<T
[server]
listen = "127.0.0.1:$HP"
workers = ${WORKERS:-0}
[log]
format = "json"
level = "${LEVEL:-info}"
[kafka]
brokers = "127.0.0.1:$BP"

properties = { "linger.ms" = "${LINGER:-1}"${PROPS:+, $PROPS} }
[spool]
dir = "$WORK/spool"
[[portals]]
member_id = "$MEMBER_ID"
application_token = "$APP_TOKEN"
T
setsid tansu broker --listener-url "tcp://127.0.0.1:$BP" --advertised-listener-url "tcp://127.0.0.1:$BP" \
  --storage-engine memory://tansu/ >"$WORK/tansu.log" 2>&1 </dev/null & TP=$!
BPID=""
trap 'kill $TP $BPID 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$BP") 2>/dev/null && break; sleep 0.1; done
"$BIN" --config "$WORK/cfg.toml" create-topics --partitions 3 >/dev/null
setsid "$BIN" --config "$WORK/cfg.toml" >"$WORK/bridge.log" 2>&1 </dev/null & BPID=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$HP/readyz" && break; sleep 0.05; done
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
timeout 40 wrk -t1 -c"${CONNS:-64}" -d20s -s "$LUA" "http://127.0.0.1:$HP" >"$WORK/wrk.txt" 2>&1 & WP=$!
sleep 3
WRKP=$(pgrep -P "$WP" wrk || echo "$WP")
b0=$(cpu $BPID); t0=$(cpu $TP); w0=$(cpu $WRKP); s0=$(date +%s%N)
if [ "${PERF:-0}" = 1 ]; then
  perf record -F 499 -g -p "$BPID" -o "$WORK/perf.data" -- sleep 12 >"$WORK/perf-rec.log" 2>&1
else
  sleep 12
fi
b1=$(cpu $BPID); t1=$(cpu $TP); w1=$(cpu $WRKP); s1=$(date +%s%N)
el=$(( (s1 - s0) / 10000000 ))
wait $WP || true
curl -s "http://127.0.0.1:$HP/metrics" >"$WORK/metrics.txt" || true
echo "CPU over the window (100 = one core): bridge $(( (b1 - b0) * 100 / el )) tansu $(( (t1 - t0) * 100 / el )) wrk $(( (w1 - w0) * 100 / el ))"
grep RESULT "$WORK/wrk.txt"
echo "work dir: $WORK"
