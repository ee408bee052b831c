#!/usr/bin/env bash
# A real S3-compatible server for the test suite: s3s-fs (see
# ../shared/S3.md), installed from crates.io when missing, started on a free
# loopback port over a fresh directory, with SigV4 keys the tests sign with.
#   .ci/s3.sh install | start DIR | stop DIR
# `start` prints the endpoint URL and leaves the PID in DIR/s3s.pid.
set -euo pipefail
S3S_VERSION=0.14.1
# The tests' keys (test-only; the server lives for one run on loopback).
ACCESS_KEY=vidcache-test
SECRET_KEY=vidcache-test-secret

install() {
  if ! command -v s3s-fs >/dev/null; then
    echo "installing s3s-fs $S3S_VERSION (about 2 min on a cold machine)" >&2
    cargo install s3s-fs --version "$S3S_VERSION" --features binary --locked >&2
  fi
}

start() {
  local dir=$1
  install
  rm -rf "$dir" && mkdir -p "$dir/data"
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  s3s-fs --host 127.0.0.1 --port "$port" --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" "$dir/data" \
    >"$dir/s3s.log" 2>&1 &
  echo $! >"$dir/s3s.pid"
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "http://127.0.0.1:$port"
      return 0
    fi
    sleep 0.1
  done
  echo "s3s-fs did not start; see $dir/s3s.log" >&2
  return 1
}

stop() {
  local dir=$1
  if [ -f "$dir/s3s.pid" ]; then
    kill "$(cat "$dir/s3s.pid")" 2>/dev/null || true
    rm -f "$dir/s3s.pid"
  fi
}

"$@"
