# vidcache for docker-compose.yaml: built in Rust's image, run on slim
# Debian with FFmpeg's libraries. The `s3` target is the same S3-compatible
# server the tests run (s3s-fs, ../shared/S3.md), for a stack with no other
# object store; point `storage.s3.*` at AWS S3, Garage, MinIO, Ceph or R2
# in production.

FROM rust:1.95-bookworm AS build
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev libswscale-dev \
      libswresample-dev libavfilter-dev libavdevice-dev cmake libssl-dev libsasl2-dev zlib1g-dev libzstd-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin vidcache && cp target/release/vidcache /usr/local/bin/vidcache

FROM rust:1.95-bookworm AS s3s-build
RUN cargo install s3s-fs --version 0.14.1 --features binary --locked

FROM debian:bookworm-slim AS s3
COPY --from=s3s-build /usr/local/cargo/bin/s3s-fs /usr/local/bin/s3s-fs
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["s3s-fs"]

FROM debian:bookworm-slim AS runtime
# ffmpeg brings the libav* shared libraries the binary links (and the CLI,
# handy for an operator); curl is for the health checks.
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      ffmpeg ca-certificates curl libsasl2-2 libssl3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/vidcache /usr/local/bin/vidcache
RUN useradd --system --home /var/lib/vidcache vidcache && mkdir -p /var/lib/vidcache \
    && chown vidcache /var/lib/vidcache
USER vidcache
WORKDIR /var/lib/vidcache
ENV VIDCACHE__STORAGE__ROOT=/var/lib/vidcache
EXPOSE 8020
ENTRYPOINT ["vidcache"]
CMD ["serve"]
