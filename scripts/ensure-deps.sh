#!/usr/bin/env bash
# Installs what building and testing need on a fresh machine (Debian with a
# Rust toolchain and gcc): make, the OpenSSL and zlib headers librdkafka
# (built from source by rdkafka-sys) links against, and Tansu, the Kafka-protocol broker the tests and the local run
# use. Idempotent: does nothing when everything is there.
set -euo pipefail

need_apt=()
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need_apt+=(libssl-dev)
dpkg -s zlib1g-dev >/dev/null 2>&1 || need_apt+=(zlib1g-dev)
command -v make >/dev/null || need_apt+=(make)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "==> installing ${need_apt[*]} (apt)"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v tansu >/dev/null; then
  echo "==> building Tansu 0.6.0 from crates.io (one-off, ~10-15 min on 2 cores)"
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql
fi
