#!/bin/bash
# chunked CLI upload of the 2 GiB source: before/after binaries, alternating
SRC=/tmp/bench-up/source-2048m.mkv
for b in before after before after; do
  root=/tmp/cli-root; rm -rf $root; mkdir -p $root
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  VIDCACHE__STORAGE__ROOT=$root VIDCACHE__SERVER__BIND=127.0.0.1:$port VIDCACHE__TRANSCODE__ON_UPLOAD=false VIDCACHE__LOG__FILTER=warn /tmp/vidcache-$b serve >/dev/null 2>&1 &
  pid=$!
  for i in $(seq 1 100); do curl -s 127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
  sync
  t0=$(date +%s.%N)
  /tmp/vidcache-$b upload --quiet --server http://127.0.0.1:$port --chunk-size 8388608 --parallel 4 --state-dir /tmp/cli-state-$b-$RANDOM "$SRC" >/dev/null
  t1=$(date +%s.%N)
  size=$(stat -c %s "$SRC")
  echo "$b: $(python3 -c "print(round($size/($t1-$t0)/1e6))") MB/s, peak RSS $(grep VmHWM /proc/$pid/status | awk '{print int($2/1024)}') MB"
  kill $pid; wait $pid 2>/dev/null
done
