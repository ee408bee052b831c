#!/usr/bin/env python3
"""The S3 backend against the local one, in the same run (issue 16).

Starts s3s-fs (.ci/s3.sh, as make test does) on loopback and compares, for
`vidcache serve` with `storage.backend = "local"` and `"s3"`:
  - a streamed upload of one large real video (curl, chunked): throughput,
    the daemon's CPU seconds per GiB and s3s-fs's (the store is on this
    machine too), and finalize latency (last byte -> answer) for a 16 MiB
    and the large file;
  - one 1 MiB-class media segment served to wrk (-t2 -c64): from disk, from
    the bucket streamed through the daemon, and with
    `storage.s3.redirect_reads` the 307 answers alone, and the presigned
    GET they point at fetched from s3s-fs directly.

    python3 tests/bench/s3_bench.py --binary target/release/vidcache [--size-mib 1024] [--rounds 2]
"""
import argparse, json, os, posixpath, re, shutil, statistics, subprocess, sys, time, urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from upload_bench import Daemon, make_source, finalize_ms  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
KEYS = dict(VIDCACHE__STORAGE__S3__ACCESS_KEY_ID="vidcache-test",
            VIDCACHE__STORAGE__S3__SECRET_ACCESS_KEY="vidcache-test-secret")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def s3s_pid(work):
    with open(os.path.join(work, "s3s.pid")) as f:
        return int(f.read())


def wrk(url, secs):
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{secs}s", "--latency", url],
                         check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} errors from {url}")
    return rps, p99


def wait_ready(daemon, video_hash, secs=600):
    deadline = time.time() + secs
    while time.time() < deadline:
        meta = json.load(urllib.request.urlopen(f"{daemon.base}/meta/{video_hash}"))
        if meta["transcode"]["status"] == "ready":
            return meta
        if meta["transcode"]["status"] == "failed":
            raise SystemExit(f"transcode failed: {meta['transcode']}")
        time.sleep(0.5)
    raise SystemExit("transcode did not finish")


def first_segment(daemon, video_hash):
    """The path of the top rung's first media segment, from its playlist."""
    master = urllib.request.urlopen(f"{daemon.base}/media/{video_hash}/hls/master.m3u8").read().decode()
    playlist = next(l for l in master.splitlines() if l and not l.startswith("#"))
    media = urllib.request.urlopen(f"{daemon.base}/media/{video_hash}/hls/{playlist}").read().decode()
    segment = next(l for l in media.splitlines() if l.endswith(".m4s") and not l.startswith("#"))
    return posixpath.normpath(f"/media/{video_hash}/hls/{segment}")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kw):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--dir", default="bench-out")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--wrk-secs", type=int, default=10)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    work = os.path.abspath(os.path.join(a.dir, "s3s"))
    endpoint = subprocess.run(["bash", os.path.join(REPO, ".ci/s3.sh"), "start", work], check=True,
                              capture_output=True, text=True).stdout.strip()
    try:
        run(a, work, endpoint)
    finally:
        subprocess.run(["bash", os.path.join(REPO, ".ci/s3.sh"), "stop", work])


def run(a, work, endpoint):
    src = os.path.join(a.dir, f"source-{a.size_mib}m.mkv")
    small = os.path.join(a.dir, "source-small.mkv")
    print(f"making sources ({a.size_mib} MiB) ...", flush=True)
    make_source(src, a.size_mib)
    make_source(small, 16)
    size = os.path.getsize(src)
    gib = size / 2**30
    s3 = dict(VIDCACHE__STORAGE__BACKEND="s3", VIDCACHE__STORAGE__S3__ENDPOINT=endpoint, **KEYS)
    backends = {
        "local": {},
        # Kept by the daemon that created it, uploaded from its spool at finalize.
        "s3": dict(s3, VIDCACHE__STORAGE__S3__SHARE_UPLOADS="false"),
        # storage.s3.share_uploads: the pieces go to the bucket as they arrive.
        "s3, shared": dict(s3, VIDCACHE__STORAGE__S3__SHARE_UPLOADS="true"),
    }
    rows = {name: [] for name in backends}
    for r in range(a.rounds):
        for name, extra in backends.items():
            subprocess.run(["sync"])
            root = os.path.abspath(os.path.join(a.dir, f"store-{name.replace(', ', '-')}-{r}"))
            shutil.rmtree(root, ignore_errors=True)
            settings = dict(extra)
            if name.startswith("s3"):
                settings["VIDCACHE__STORAGE__S3__BUCKET"] = f"bench-{r}-{int(time.time())}"
            d = Daemon(a.binary, root, VIDCACHE__TRANSCODE__WORKERS="0", **settings)
            try:
                s0, c0 = d.metric("vidcache_upload_finalize_seconds_sum"), d.metric("vidcache_upload_finalize_seconds_count")
                d.upload(small, f"https://bench.test/small-{name}-{r}")
                fin_small = finalize_ms(d, s0, c0)
                s0, c0 = d.metric("vidcache_upload_finalize_seconds_sum"), d.metric("vidcache_upload_finalize_seconds_count")
                cpu0, store0 = cpu_seconds(d.proc.pid), cpu_seconds(s3s_pid(work))
                res, up = d.upload(src, f"https://bench.test/large-{name}-{r}")
                cpu = cpu_seconds(d.proc.pid) - cpu0
                store_cpu = cpu_seconds(s3s_pid(work)) - store0
                fin_large = finalize_ms(d, s0, c0)
                rss = d.peak_rss_mb()
            finally:
                d.stop()
            assert res["status"] == "new", res
            shutil.rmtree(root, ignore_errors=True)
            rows[name].append(dict(mbs=size / up / 1e6, cpu=cpu / gib, store_cpu=store_cpu / gib,
                                   fin_small=fin_small, fin_large=fin_large, rss=rss))
            x = rows[name][-1]
            print(f"round {r + 1} {name}: {x['mbs']:.0f} MB/s, daemon {x['cpu']:.2f} CPU-s/GiB, "
                  f"s3s-fs {x['store_cpu']:.2f} CPU-s/GiB, finalize 16 MiB {fin_small:.0f} ms / "
                  f"{a.size_mib} MiB {fin_large:.0f} ms, peak RSS {rss:.0f} MB", flush=True)

    med = lambda name, k: statistics.median(x[k] for x in rows[name])
    print()
    print(f"| streamed upload, {a.size_mib} MiB, median of {a.rounds} | local | s3 (s3s-fs on loopback) | s3 / local "
          f"| s3, shared | shared / local |")
    print("|---|---|---|---|---|---|")
    for k, label, fmt in [("mbs", "throughput, MB/s", "{:.0f}"), ("cpu", "daemon CPU-s per GiB", "{:.2f}"),
                          ("store_cpu", "store CPU-s per GiB (s3s-fs)", "{:.2f}"),
                          ("fin_small", "finalize, 16 MiB, ms", "{:.0f}"),
                          ("fin_large", f"finalize, {a.size_mib} MiB, ms", "{:.0f}"), ("rss", "daemon peak RSS, MB", "{:.0f}")]:
        lo, s3, shared = med("local", k), med("s3", k), med("s3, shared", k)
        ratio = lambda x: f"{x / lo:.2f}" if lo else "-"
        print(f"| {label} | {fmt.format(lo)} | {fmt.format(s3)} | {ratio(s3)} | {fmt.format(shared)} | {ratio(shared)} |")
    print()
    serving(a, endpoint)


def serving(a, endpoint):
    """One segment to wrk: local disk, the bucket streamed, the redirect, and the presigned GET."""
    small = os.path.join(a.dir, "segment-source.mp4")
    if not os.path.exists(small):
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        "testsrc2=size=1280x720:rate=30", "-t", "6", "-c:v", "libx264", "-preset", "ultrafast",
                        "-pix_fmt", "yuv420p", small], check=True)
    bucket = f"bench-serve-{int(time.time())}"
    s3 = dict(VIDCACHE__STORAGE__BACKEND="s3", VIDCACHE__STORAGE__S3__ENDPOINT=endpoint,
              VIDCACHE__STORAGE__S3__BUCKET=bucket, **KEYS)
    results = {}
    for name, extra in [("local disk", {}), ("bucket, streamed", s3),
                        ("bucket, redirected (307 only)", dict(s3, VIDCACHE__STORAGE__S3__REDIRECT_READS="true"))]:
        root = os.path.abspath(os.path.join(a.dir, f"serve-{len(results)}"))
        shutil.rmtree(root, ignore_errors=True)
        d = Daemon(a.binary, root, VIDCACHE__TRANSCODE__WORKERS="1", VIDCACHE__TRANSCODE__PRESET="ultrafast", **extra)
        try:
            res, _ = d.upload(small, f"https://bench.test/seg-{len(results)}")
            if res["status"] == "new":
                wait_ready(d, res["hash"])
            if "REDIRECT" in str(extra):
                url = d.base + first_segment(d, res["hash"])
                results[name] = wrk(url, a.wrk_secs)
                try:
                    urllib.request.build_opener(NoRedirect).open(url)
                    raise SystemExit("a redirected read answered without a redirect")
                except urllib.error.HTTPError as e:
                    presigned = e.headers["location"]
                results["presigned GET from s3s-fs"] = wrk(presigned, a.wrk_secs)
            else:
                path = first_segment(d, res["hash"])
                size = len(urllib.request.urlopen(d.base + path).read())
                print(f"segment {path.rsplit('/', 1)[1]}: {size / 1e6:.2f} MB")
                results[name] = wrk(d.base + path, a.wrk_secs)
        finally:
            d.stop()
            shutil.rmtree(root, ignore_errors=True)
    base = results["local disk"][0]
    print(f"| one segment, wrk -t2 -c64 -d{a.wrk_secs}s | req/s | p99 | / local |")
    print("|---|---|---|---|")
    for name, (rps, p99) in results.items():
        print(f"| {name} | {rps:.0f} | {p99} | {rps / base:.2f} |")


if __name__ == "__main__":
    main()
