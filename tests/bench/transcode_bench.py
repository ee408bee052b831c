#!/usr/bin/env python3
"""Transcoding and media-serving benchmarks (issue 5), each beside its
reference in the same run:

  1. a 60 s 1080p30 source with audio through the daemon's queue and worker
     into the default ladder (1080p/720p/480p/240p, veryfast, 2 s segments,
     AAC 128k), timed from the upload's answer to `transcode.status=ready`,
     against (a) the ffmpeg CLI writing the same ladder in one run with the
     dash muxer making both manifests over the same segments
     (`../shared/reference/ladder.sh cmaf`, goal vidcache/(a) <= 1.05) and
     (b) the two-encode approach, HLS with MPEG-TS and then DASH
     (`ladder.sh two`, goal vidcache/(b) <= 0.55); plus the realtime factor;
  2. 200 random 1 MiB segments served to wrk (-t2 -c64, 15 s) by vidcache
     (`/media/{hash}/seg/...`) and by nginx (Debian package, sendfile on)
     over the same files, alternating (goal vidcache/nginx >= 0.9 req/s).

    python3 tests/bench/transcode_bench.py --binary ~/.cache/vidcache/target/release/vidcache
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import upload_bench  # noqa: E402
from upload_bench import free_port, sh  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFERENCE = os.path.join(ROOT, "..", "shared", "reference")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid):
    # Writing 5 to clear_refs resets VmHWM to the current RSS.
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def children_cpu():
    usage = os.times()
    return usage.children_user + usage.children_system


class Daemon(upload_bench.Daemon):
    """upload_bench's daemon, with `/meta` reads and a one-call upload."""

    def get_json(self, path):
        return json.load(urllib.request.urlopen(self.base + path))

    def upload_file(self, src):
        return self.upload(src, f"https://bench/{os.path.basename(src)}")[0]


def make_source(path, secs):
    if not os.path.exists(path):
        sh(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
            "testsrc2=size=1920x1080:rate=30,noise=alls=25:allf=t", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", str(secs), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", "-c:a", "aac",
            "-movflags", "+faststart", path + ".tmp.mp4"])
        os.rename(path + ".tmp.mp4", path)
    return path


def timed(cmd):
    before = children_cpu()
    t = time.perf_counter()
    sh(cmd)
    return time.perf_counter() - t, children_cpu() - before


def vidcache_ladder(binary, src, work):
    root = os.path.join(work, "vidcache-root")
    shutil.rmtree(root, ignore_errors=True)
    # The upload's own analysis is off: at loopback speed it would hand over
    # and decode the whole source in the background, beside the transcode
    # being measured (analysis_bench.py measures it on its own).
    daemon = Daemon(binary, root, VIDCACHE__TRANSCODE__WORKERS="1", VIDCACHE__TRANSCODE__PRESET="veryfast",
                    VIDCACHE__ANALYSIS__ENABLED="false")
    try:
        result = daemon.upload_file(src)
        t = time.perf_counter()
        cpu0 = cpu_seconds(daemon.proc.pid)
        while True:
            status = daemon.get_json(f"/meta/{result['hash']}")["transcode"]["status"]
            if status == "ready":
                break
            if status == "failed":
                raise SystemExit("the transcode failed")
            time.sleep(0.1)
        return time.perf_counter() - t, cpu_seconds(daemon.proc.pid) - cpu0, root, result["hash"], daemon, daemon.peak_rss_mb()
    except BaseException:
        daemon.stop()
        raise


def rung_bytes(seg_dir):
    """Bytes of each representation's media segments, by representation id."""
    sizes = {}
    for name in os.listdir(seg_dir):
        m = re.match(r"chunk-(\d+)-\d+\.m4s$", name)
        if m:
            sizes[int(m.group(1))] = sizes.get(int(m.group(1)), 0) + os.path.getsize(os.path.join(seg_dir, name))
    return sizes


def print_rung_sizes(ours_dir, reference_dir):
    """Each rung's output against the CLI's at the same settings: an IDR
    frame at every 2 s segment start (closed GOPs) costs bits."""
    ours, theirs = rung_bytes(ours_dir), rung_bytes(reference_dir)
    names = ["1080p", "720p", "480p", "240p", "audio"]
    print("  output size per rung, vidcache / ffmpeg CLI (a):")
    for rep in sorted(set(ours) & set(theirs)):
        name = names[rep] if rep < len(names) else str(rep)
        print(f"    {name}: {ours[rep] / 1e6:.2f} MB / {theirs[rep] / 1e6:.2f} MB = {ours[rep] / theirs[rep]:.3f}")


def wrk(base, prefix, secs, lua_dir, pattern=None):
    """wrk -t2 -c64 over 200 random files: `{prefix}/seg/seg_NNN.m4s`, or
    `pattern` (with a %03d) when given. Answers (requests/s, p99)."""
    pattern = pattern or f"{prefix}/seg/seg_%03d.m4s"
    script = os.path.join(lua_dir, f"randseg-{abs(hash(pattern))}.lua")
    with open(os.path.join(REFERENCE, "randseg.lua")) as f:
        text = f.read().replace('"/seg/seg_%03d.m4s"', f'"{pattern}"')
    with open(script, "w") as f:
        f.write(text)
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{secs}s", "--latency", "-s", script, base],
                         check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} errors from {base}{pattern}")
    return rps, p99


def nginx(root, work):
    port = free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""user root; worker_processes auto; daemon off; pid {work}/nginx.pid; error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  types {{ video/iso.segment m4s; }}
  server {{ listen 127.0.0.1:{port}; root {root}; location / {{ add_header Cache-Control "public, max-age=31536000, immutable"; }} }} }}
""")
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", work], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/seg/seg_000.m4s", timeout=1)
            return proc, f"http://127.0.0.1:{port}"
        except Exception:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("nginx did not start")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--dir", default="bench-out")
    ap.add_argument("--secs", type=int, default=60)
    ap.add_argument("--wrk-secs", type=int, default=15)
    ap.add_argument("--wrk-rounds", type=int, default=2)
    ap.add_argument("--skip-ladder", action="store_true", help="only the serving benchmark")
    args = ap.parse_args()
    work = os.path.abspath(args.dir)
    os.makedirs(work, exist_ok=True)
    src = make_source(os.path.join(work, f"ladder-src-{args.secs}s.mp4"), args.secs)

    if not args.skip_ladder:
        v_s, v_cpu, root, video_hash, daemon, v_rss = vidcache_ladder(args.binary, src, work)
        a_s, a_cpu = timed(["bash", os.path.join(REFERENCE, "ladder.sh"), "cmaf", src, os.path.join(work, "ref-cmaf")])
        parts = os.path.join(work, "two-parts.log")
        open(parts, "w").close()
        before = children_cpu()
        t = time.perf_counter()
        sh(["bash", os.path.join(REFERENCE, "ladder.sh"), "two", src, os.path.join(work, "ref-two")], env=dict(os.environ, PARTS_LOG=parts))
        b_s, b_cpu = time.perf_counter() - t, children_cpu() - before
        print(f"ladder, {args.secs} s 1080p30 source with audio, default ladder:")
        print(f"  vidcache (queue + worker, upload answer -> ready): {v_s:.1f} s, {v_cpu:.0f} CPU-s, "
              f"{args.secs / v_s:.2f}x realtime, daemon peak RSS {v_rss:.0f} MB")
        print(f"  (a) ffmpeg CLI, one CMAF run: {a_s:.1f} s, {a_cpu:.0f} CPU-s   vidcache/(a) = {v_s / a_s:.2f} (goal <= 1.05)")
        print(f"  (b) ffmpeg CLI, HLS-TS then DASH: {b_s:.1f} s, {b_cpu:.0f} CPU-s ({open(parts).read().strip()})"
              f"   vidcache/(b) = {v_s / b_s:.2f} (goal <= 0.55)")
        print_rung_sizes(os.path.join(root, ".media", video_hash, "abr", "seg-v2"), os.path.join(work, "ref-cmaf"))
    else:
        root = os.path.join(work, "vidcache-root")
        shutil.rmtree(root, ignore_errors=True)
        daemon = Daemon(args.binary, root, VIDCACHE__TRANSCODE__WORKERS="0")
        small = os.path.join(work, "serve-src.mp4")
        if not os.path.exists(small):
            sh(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
                "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", small])
        video_hash = daemon.upload_file(small)["hash"]

    try:
        # The same 200 random 1 MiB files, served by both.
        abr = os.path.join(root, ".media", video_hash, "abr")
        os.makedirs(os.path.join(abr, "seg"), exist_ok=True)
        for i in range(200):
            with open(os.path.join(abr, "seg", f"seg_{i:03d}.m4s"), "wb") as f:
                f.write(os.urandom(1 << 20))
        nginx_proc, nginx_base = nginx(abr, work)
        reset_peak_rss(daemon.proc.pid)
        try:
            ours, theirs = [], []
            for _ in range(args.wrk_rounds):
                ours.append(wrk(daemon.base, f"/media/{video_hash}", args.wrk_secs, work))
                theirs.append(wrk(nginx_base, "", args.wrk_secs, work))
            v_rps = statistics.median(r for r, _ in ours)
            n_rps = statistics.median(r for r, _ in theirs)
            print(f"random 1 MiB segments, wrk -t2 -c64 -d{args.wrk_secs}s, {args.wrk_rounds} rounds alternating:")
            print(f"  vidcache: {[round(r) for r, _ in ours]} req/s, p99 {[p for _, p in ours]}")
            print(f"  nginx:    {[round(r) for r, _ in theirs]} req/s, p99 {[p for _, p in theirs]}")
            print(f"  vidcache/nginx = {v_rps / n_rps:.2f} (goal >= 0.9); daemon peak RSS while serving {daemon.peak_rss_mb():.0f} MB")
        finally:
            nginx_proc.kill()
            nginx_proc.wait()
    finally:
        daemon.stop()


if __name__ == "__main__":
    main()
