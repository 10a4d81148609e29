# Ayder container image: build on Debian bookworm, run on bookworm-slim as a non-root user.
#
#   docker build -t ayder .
#   docker run -p 1109:1109 -v ayder-data:/var/lib/ayder ayder
#
# The build and run steps below are also executed, without a Docker engine, by
# tools/docker-steps.sh (same commands, same user, same paths in a scratch root): see
# README "Docker" for exactly what that checks and what it cannot.

# ---- build stage ----------------------------------------------------------------------------
FROM debian:bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc make libc6-dev libuv1-dev libjansson-dev \
      libssl-dev libavro-dev libprotobuf-c-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY src ./src
RUN make -j"$(nproc)" ayder && strip ayder && ./ayder --help >/dev/null

# ---- run stage ------------------------------------------------------------------------------
FROM debian:bookworm-slim
# The shared libraries the binary links (tools/docker-steps checks the list against readelf),
# curl for the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libuv1 libjansson4 libssl3 \
      libprotobuf-c1 curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ayder \
 && useradd --system --uid 10001 --gid ayder --home-dir /var/lib/ayder --no-create-home \
      --shell /usr/sbin/nologin ayder \
 && mkdir -p /var/lib/ayder \
 && chown ayder:ayder /var/lib/ayder \
 && chmod 0750 /var/lib/ayder
COPY --from=build /src/ayder /usr/local/bin/ayder
USER ayder:ayder
# The data directory (journal, partition logs, checkpoints) must outlive the container.
VOLUME ["/var/lib/ayder"]
ENV RF_DATA_DIR=/var/lib/ayder \
    RF_BEARER_TOKENS=dev
EXPOSE 1109
# SIGTERM = graceful shutdown: in-flight writes are finished and answered, a final checkpoint is
# written, exit code 0 (the main thread sigwaits on SIGTERM/SIGINT, so this works as PID 1 too:
# a blocked signal is never dropped as an unhandled signal to init). Give it time to checkpoint:
# `docker stop -t 30` / compose `stop_grace_period: 30s`.
STOPSIGNAL SIGTERM
# /ready is 200 once recovery is done and the store accepts writes (503 while recovering, after a
# failed fsync, or when the disk is below --min-free-bytes).
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:1109/ready || exit 1
ENTRYPOINT ["/usr/local/bin/ayder"]
CMD ["--bind", "0.0.0.0", "--port", "1109", "--data-dir", "/var/lib/ayder"]
