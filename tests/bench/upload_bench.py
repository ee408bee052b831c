#!/usr/bin/env python3
"""Upload benchmark for vidcache (issue: the daemon and its upload engine).

Streams one large real video through `POST /upload/init` + `POST /upload/{id}`
(chunked transfer encoding, sent by curl) and compares, in the same run:
  - throughput against `dd bs=8M conv=fdatasync` writing the same bytes to the same disk;
  - BLAKE3 with `b3sum --num-threads 1` (vidcache hashes inline, on one thread);
  - finalize latency (last body byte -> ingest result), from the daemon's own
    histogram `vidcache_upload_finalize_seconds`, for a small and the large file;
  - the daemon's peak RSS (VmHWM) after the large upload (no transcode
    worker, so the figure is the upload path's, not the ladder's after it).

Each round starts a fresh daemon on a fresh storage root, so every upload is
`new` (probe + rename + insert), never a cheap duplicate.

    python3 tests/bench/upload_bench.py --binary target/release/vidcache [--size-mib 2048] [--rounds 2]
"""
import argparse, json, os, re, shutil, socket, statistics, subprocess, sys, time, urllib.request

def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)

def make_source(path, size_mib):
    """A real video file of about size_mib: raw 720p frames in Matroska."""
    if os.path.exists(path) and abs(os.path.getsize(path) - size_mib * 2**20) < 8 * 2**20:
        return
    frame = 1280 * 720 * 3 // 2
    frames = max(2, size_mib * 2**20 // frame)
    sh(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
        "-frames:v", str(frames), "-c:v", "rawvideo", "-pix_fmt", "yuv420p", path])

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port

def timed(cmd):
    t = time.perf_counter(); sh(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); return time.perf_counter() - t

def drop_dirty():
    sh(["sync"])

class Daemon:
    def __init__(self, binary, root, **settings):
        """`vidcache serve` on `root`; `settings` are more VIDCACHE__* variables."""
        self.port = free_port()
        env = dict(os.environ, VIDCACHE__STORAGE__ROOT=root, VIDCACHE__SERVER__BIND=f"127.0.0.1:{self.port}",
                   VIDCACHE__LOG__FILTER="warn", **settings)
        env.pop("VIDCACHE_CONFIG", None)
        self.proc = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(self.base + "/healthz", timeout=1); return
            except Exception:
                time.sleep(0.05)
        raise SystemExit("daemon did not start")

    def post_json(self, path, body):
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
        return json.load(urllib.request.urlopen(req))

    def upload(self, src, url):
        upload_id = self.post_json("/upload/init", {"url": url, "bucket": "bench"})["upload_id"]
        t = time.perf_counter()
        out = subprocess.run(["curl", "-sS", "-X", "POST", "-H", "Transfer-Encoding: chunked", "-H", "Content-Type: application/octet-stream",
                              "-T", src, f"{self.base}/upload/{upload_id}"], check=True, capture_output=True, text=True)
        elapsed = time.perf_counter() - t
        return json.loads(out.stdout), elapsed

    def metric(self, name):
        text = urllib.request.urlopen(self.base + "/metrics").read().decode()
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def peak_rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        self.proc.kill(); self.proc.wait()

def finalize_ms(daemon, before_sum, before_count):
    s = daemon.metric("vidcache_upload_finalize_seconds_sum") - before_sum
    c = daemon.metric("vidcache_upload_finalize_seconds_count") - before_count
    return 1000 * s / c if c else float("nan")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--dir", default="bench-out")
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    src = os.path.join(a.dir, f"source-{a.size_mib}m.mkv")
    small = os.path.join(a.dir, "source-small.mkv")
    print(f"making sources ({a.size_mib} MiB) ...", flush=True)
    make_source(src, a.size_mib)
    make_source(small, 16)
    size = os.path.getsize(src)
    expected = subprocess.run(["b3sum", "--no-names", src], check=True, capture_output=True, text=True).stdout.strip()
    b3 = timed(["b3sum", "--num-threads", "1", src])  # warm: the file is in page cache from b3sum above

    rows = []
    for r in range(a.rounds):
        drop_dirty()
        ddout = os.path.join(a.dir, "dd.out")
        dd = timed(["dd", f"if={src}", f"of={ddout}", "bs=8M", "conv=fdatasync"])
        os.remove(ddout); drop_dirty()

        root = os.path.join(a.dir, f"store-{r}")
        shutil.rmtree(root, ignore_errors=True)
        # No transcode worker: the peak RSS is the upload path's. With one,
        # the ladder of the committed video starts at once and its x264
        # encoders (about 190 MB at 720p) land in the same VmHWM (issue 29
        # read 188 MB as the upload's).
        d = Daemon(a.binary, root, VIDCACHE__TRANSCODE__WORKERS="0")
        try:
            s0, c0 = d.metric("vidcache_upload_finalize_seconds_sum"), d.metric("vidcache_upload_finalize_seconds_count")
            res_small, _ = d.upload(small, f"https://bench.test/small-{r}")
            fin_small = finalize_ms(d, s0, c0)
            s0, c0 = d.metric("vidcache_upload_finalize_seconds_sum"), d.metric("vidcache_upload_finalize_seconds_count")
            res, up = d.upload(src, f"https://bench.test/large-{r}")
            fin_large = finalize_ms(d, s0, c0)
            rss = d.peak_rss_mb()
        finally:
            d.stop()
        assert res["hash"] == expected, f"hash mismatch: {res} vs {expected}"
        assert res["status"] == "new" and res_small["status"] == "new", (res, res_small)
        shutil.rmtree(root, ignore_errors=True)
        rows.append(dict(dd_mbs=size / dd / 1e6, up_mbs=size / up / 1e6, ratio=dd / up,
                         fin_small_ms=fin_small, fin_large_ms=fin_large, rss_mb=rss))
        print(f"round {r + 1}: dd {rows[-1]['dd_mbs']:.0f} MB/s, vidcache {rows[-1]['up_mbs']:.0f} MB/s "
              f"(ratio {rows[-1]['ratio']:.2f}), finalize 16 MiB {fin_small:.1f} ms / {a.size_mib} MiB {fin_large:.1f} ms, "
              f"peak RSS {rss:.0f} MB", flush=True)

    med = lambda k: statistics.median(x[k] for x in rows)
    print()
    print(f"| what ({a.size_mib} MiB, median of {a.rounds}) | figure | goal |")
    print("|---|---|---|")
    print(f"| dd bs=8M conv=fdatasync, same disk | {med('dd_mbs'):.0f} MB/s | reference |")
    print(f"| vidcache upload/init + chunked POST | {med('up_mbs'):.0f} MB/s | |")
    print(f"| **throughput ratio vidcache / dd** | **{med('ratio'):.2f}** | >= 0.8 |")
    print(f"| b3sum --num-threads 1 (cached), for scale | {size / b3 / 1e6:.0f} MB/s | reference |")
    print(f"| finalize after last byte, 16 MiB | {med('fin_small_ms'):.1f} ms | <= 50 ms |")
    print(f"| finalize after last byte, {a.size_mib} MiB | {med('fin_large_ms'):.1f} ms | <= 50 ms, size-independent |")
    print(f"| daemon peak RSS (VmHWM) | {med('rss_mb'):.0f} MB | <= 100 MB |")

if __name__ == "__main__":
    main()
