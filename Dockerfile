# syntax=docker/dockerfile:1

FROM rust:1-bookworm AS builder
# librdkafka is compiled from source by rdkafka-sys and links OpenSSL and zlib.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts only speed up rebuilds; the binary is copied out of the
# cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && install -m 0755 target/release/b24-kafka-bridge /usr/local/bin/b24-kafka-bridge

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/*
# Numeric ids so orchestrators can verify runAsNonRoot. The spool directory is
# created here so a fresh named volume mounted on it inherits this ownership.
RUN groupadd --system --gid 10001 b24bridge \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin b24bridge \
 && install -d -m 0755 /etc/b24-kafka-bridge \
 && install -d -o 10001 -g 10001 -m 0750 \
      /var/lib/b24-kafka-bridge /var/lib/b24-kafka-bridge/spool
COPY --from=builder /usr/local/bin/b24-kafka-bridge /usr/local/bin/b24-kafka-bridge
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/b24-kafka-bridge"]
CMD ["--config", "/etc/b24-kafka-bridge/config.toml"]
