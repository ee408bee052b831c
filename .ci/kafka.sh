#!/usr/bin/env bash
# A real Kafka-protocol broker for the test suite: tansu (see
# ../shared/KAFKA.md), installed from crates.io when missing, started on a
# free loopback port with SQLite storage in a fresh directory.
#   .ci/kafka.sh install | start DIR | stop DIR
# `start` prints the broker address and leaves the PID in DIR/tansu.pid.
set -euo pipefail
TANSU_VERSION=0.6.0

install() {
  if ! command -v tansu >/dev/null; then
    echo "installing tansu $TANSU_VERSION (about 15 min on a cold machine)" >&2
    cargo install tansu --version "$TANSU_VERSION" --locked --features libsql,dynostore >&2
  fi
}

start() {
  local dir=$1
  install
  rm -rf "$dir" && mkdir -p "$dir/data"
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # The SQLite URL must be relative to the working directory (KAFKA.md).
  (cd "$dir" && exec tansu broker --listener-url "tcp://127.0.0.1:$port" \
     --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine sqlite://data/tansu.db \
     >"$dir/tansu.log" 2>&1) &
  echo $! >"$dir/tansu.pid"
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      python3 kafka/create-topics.py --brokers "127.0.0.1:$port" >&2
      echo "127.0.0.1:$port"
      return 0
    fi
    sleep 0.1
  done
  echo "tansu did not start; see $dir/tansu.log" >&2
  return 1
}

stop() {
  local dir=$1
  if [ -f "$dir/tansu.pid" ]; then
    kill "$(cat "$dir/tansu.pid")" 2>/dev/null || true
    rm -f "$dir/tansu.pid"
  fi
}

"$@"
