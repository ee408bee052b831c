#!/usr/bin/env python3
"""What signed playback costs (issue 15), beside its references in the
same run: 200 random 1 MiB segments served to wrk (-t2 -c64) by

  * an open vidcache (no keys: `/media/{hash}/seg/...`, public),
  * a vidcache with keys, through a playback token in the path
    (`/media/t/{token}/{hash}/seg/...`: the holders look-up and one HMAC
    per request),
  * nginx (Debian package, sendfile on) over the same files,

in alternating rounds (goals, issue 30: public/nginx >= 0.95, signed/public
>= 0.97, p99 within 1.2x nginx's). The public daemon's resident memory
after its rounds is printed as anonymous memory (its own) and file pages
(kept mappings of the segments, page cache). Then 200 random 4 KiB files
(playlist-sized) from the public daemon and from nginx, alternating.
Then key checks per second on one core
(`examples/key_checks.rs`, against bare HMAC-SHA256 of the same bytes).

    python3 tests/bench/auth_bench.py --binary ~/.cache/vidcache/target/release/vidcache
"""
import argparse
import base64, json, os, urllib.request, shutil, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from transcode_bench import Daemon, nginx, wrk  # noqa: E402
from upload_bench import sh  # noqa: E402

SECRET = "auth-bench-server-secret-0123456789abcdef"


def keyed_token(keyed, src):
    """Uploads `src` as key `bench` of project `p`, then asks for its playback
    token (`GET /api/v1/videos/{id}/playback`) and returns the token."""
    auth = "Basic " + base64.b64encode(b"bench:s").decode()
    req = urllib.request.Request(keyed.base + "/upload/init", method="POST",
                                 data=json.dumps({"url": "https://bench/signed", "bucket": "bench"}).encode(),
                                 headers={"content-type": "application/json", "authorization": auth})
    upload_id = json.load(urllib.request.urlopen(req))["upload_id"]
    out = subprocess.run(["curl", "-sS", "-f", "-X", "POST", "-H", f"Authorization: {auth}",
                          "-H", "Content-Type: application/octet-stream", "--data-binary", f"@{src}",
                          f"{keyed.base}/upload/{upload_id}"], check=True, capture_output=True, text=True)
    video_hash = json.loads(out.stdout)["hash"]
    req = urllib.request.Request(f"{keyed.base}/api/v1/videos/{video_hash}/playback", headers={"authorization": auth})
    hls = json.load(urllib.request.urlopen(req))["hls_url"]
    return hls.split("/media/t/", 1)[1].split("/", 1)[0]


def memory(pid):
    """Peak and current resident memory of a process, split into its own
    (anonymous) and mapped file pages."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    mb = lambda k: int(fields[k].split()[0]) // 1024
    return f"VmHWM {mb('VmHWM')} MB, RssAnon {mb('RssAnon')} MB, RssFile {mb('RssFile')} MB"


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
    # 200 random 1 MiB files under its hash.
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
        # Project `p` holds the video on the keyed daemon, and a token comes
        # from the API as a backend gets one (tokens are bound to a holding
        # project, so each signed request also looks up the video's holders).
        token = keyed_token(keyed, small)
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
              f"public/nginx = {med['public'] / med['nginx']:.2f} (goal >= 0.95); "
              f"signed/nginx = {med['signed'] / med['nginx']:.2f}")
        p99 = {k: statistics.median(float(p.rstrip("ms")) if p.endswith("ms") else float("nan") for _, p in v)
               for k, v in rounds.items()}
        print(f"  median p99: public {p99['public']:.1f} ms, signed {p99['signed']:.1f} ms, nginx {p99['nginx']:.1f} ms "
              f"(public/nginx {p99['public'] / p99['nginx']:.2f}, goal <= 1.2)")
        print("  public daemon after its rounds: " + memory(public.proc.pid))

        # Playlist-sized files: 200 of 4 KiB under a second hash, from the
        # public daemon and from nginx.
        small_hash = "ab" * 32
        small_abr = os.path.join(open_root, ".media", small_hash, "abr")
        os.makedirs(os.path.join(small_abr, "hls"), exist_ok=True)
        os.makedirs(os.path.join(small_abr, "seg"), exist_ok=True)
        open(os.path.join(small_abr, "seg", "seg_000.m4s"), "wb").close()  # what nginx() waits for
        for i in range(200):
            with open(os.path.join(small_abr, "hls", f"p_{i:03d}.m3u8"), "wb") as f:
                f.write(b"#EXTM3U\n" + os.urandom(2044).hex().encode())
        os.makedirs(os.path.join(work, "nginx-small"), exist_ok=True)
        small_nginx, small_base = nginx(small_abr, os.path.join(work, "nginx-small"))
        try:
            small = {"public": [], "nginx": []}
            for _ in range(args.wrk_rounds):
                small["public"].append(wrk(public.base, "", args.wrk_secs, work, f"/media/{small_hash}/hls/p_%03d.m3u8"))
                small["nginx"].append(wrk(small_base, "", args.wrk_secs, work, "/hls/p_%03d.m3u8"))
        finally:
            small_nginx.kill()
            small_nginx.wait()
        print(f"random 4 KiB files (playlist-sized), wrk -t2 -c64 -d{args.wrk_secs}s, {args.wrk_rounds} rounds alternating:")
        for name, runs in small.items():
            print(f"  {name:7s} {[round(r) for r, _ in runs]} req/s, p99 {[p for _, p in runs]}")
        sm = {k: statistics.median(r for r, _ in v) for k, v in small.items()}
        print(f"  public/nginx = {sm['public'] / sm['nginx']:.2f}")
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
