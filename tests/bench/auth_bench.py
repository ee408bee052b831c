#!/usr/bin/env python3
"""What signed playback costs (issue 15), beside its references in the
same run: 200 random 1 MiB segments served to wrk (-t2 -c64) by

  * an open vidcache (no keys: `/media/{hash}/seg/...`, public),
  * a vidcache with keys, through a playback token in the path
    (`/media/t/{token}/{hash}/seg/...`: one HMAC per request),
  * nginx (Debian package, sendfile on) over the same files,

in alternating rounds (goal: signed/public >= 0.97, the check costing at
most 3 % of requests per second). Then key checks per second on one core
(`examples/key_checks.rs`, against bare HMAC-SHA256 of the same bytes).

    python3 tests/bench/auth_bench.py --binary ~/.cache/vidcache/target/release/vidcache
"""
import argparse, hashlib, hmac, os, shutil, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from transcode_bench import Daemon, nginx, wrk  # noqa: E402
from upload_bench import sh  # noqa: E402

SECRET = "auth-bench-server-secret-0123456789abcdef"


def token_for(video_hash, ttl=3600):
    """A playback token as the daemon makes one (README, "Signed playback")."""
    expires = int(time.time()) + ttl
    mac = hmac.new(SECRET.encode(), f"vidcache playback\0{video_hash}\0{expires}".encode(), hashlib.sha256)
    return f"{expires}-{mac.hexdigest()[:32]}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--dir", default="bench-out")
    ap.add_argument("--wrk-secs", type=int, default=10)
    ap.add_argument("--wrk-rounds", type=int, default=3)
    args = ap.parse_args()
    work = os.path.abspath(args.dir)
    os.makedirs(work, exist_ok=True)

    # The open daemon stores a small video; both daemons then serve the same
    # 200 random 1 MiB files under its hash (the token path reads no row).
    open_root, keyed_root = os.path.join(work, "auth-open"), os.path.join(work, "auth-keyed")
    for root in (open_root, keyed_root):
        shutil.rmtree(root, ignore_errors=True)
    small = os.path.join(work, "serve-src.mp4")
    if not os.path.exists(small):
        sh(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
            "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", small])
    public = Daemon(args.binary, open_root, VIDCACHE__TRANSCODE__WORKERS="0")
    keyed = None
    nginx_proc = None
    try:
        video_hash = public.upload_file(small)["hash"]
        abr = os.path.join(open_root, ".media", video_hash, "abr")
        os.makedirs(os.path.join(abr, "seg"), exist_ok=True)
        for i in range(200):
            with open(os.path.join(abr, "seg", f"seg_{i:03d}.m4s"), "wb") as f:
                f.write(os.urandom(1 << 20))
        keyed_abr = os.path.join(keyed_root, ".media", video_hash, "abr")
        shutil.copytree(abr, keyed_abr)
        keyed = Daemon(args.binary, keyed_root, VIDCACHE__TRANSCODE__WORKERS="0",
                       VIDCACHE__AUTH__API_KEYS='[{"id": "bench", "key": "s", "project_id": "p"}]',
                       VIDCACHE__AUTH__PRESIGN_SECRET=SECRET)
        nginx_proc, nginx_base = nginx(abr, work)
        token = token_for(video_hash)
        rounds = {"public": [], "signed": [], "nginx": []}
        for _ in range(args.wrk_rounds):
            rounds["public"].append(wrk(public.base, f"/media/{video_hash}", args.wrk_secs, work))
            rounds["signed"].append(wrk(keyed.base, f"/media/t/{token}/{video_hash}", args.wrk_secs, work))
            rounds["nginx"].append(wrk(nginx_base, "", args.wrk_secs, work))
        med = {k: statistics.median(r for r, _ in v) for k, v in rounds.items()}
        print(f"random 1 MiB segments, wrk -t2 -c64 -d{args.wrk_secs}s, {args.wrk_rounds} rounds alternating:")
        for name, runs in rounds.items():
            print(f"  {name:7s} {[round(r) for r, _ in runs]} req/s, p99 {[p for _, p in runs]}")
        print(f"  signed/public = {med['signed'] / med['public']:.3f} (goal >= 0.97); "
              f"public/nginx = {med['public'] / med['nginx']:.2f}; signed/nginx = {med['signed'] / med['nginx']:.2f}")
    finally:
        if nginx_proc:
            nginx_proc.kill()
            nginx_proc.wait()
        public.stop()
        if keyed:
            keyed.stop()

    # Checks per second on one core, against bare HMAC-SHA256.
    target = os.path.dirname(os.path.dirname(os.path.abspath(args.binary)))
    example = os.path.join(target, "release", "examples", "key_checks")
    if not os.path.exists(example):
        sh(["cargo", "build", "--release", "--example", "key_checks"])
    print(subprocess.run(["taskset", "-c", "0", example], check=True, capture_output=True, text=True).stdout.rstrip())


if __name__ == "__main__":
    main()
