#!/usr/bin/env python3
"""Does the time of an answer tell one project what another holds? (issue 15)

A daemon with keys for projects `a` and `b1..bN`. Project `a` stores video
X. Then, alternating, each project `b_i` uploads
  * X itself (bytes only `a` holds: answered `new`, "new to you"), and
  * a video nobody holds, made with the same generator, size and length
    (answered `new`, a genuinely new video),
through the streamed door, timed from the first byte sent to the answer.
Both answers must be `new`; the medians are compared (the reference is the
genuinely new upload, in the same run).

    python3 tests/bench/privacy_bench.py --binary ~/.cache/vidcache/target/release/vidcache
"""
import argparse, base64, json, os, shutil, statistics, subprocess, sys, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upload_bench import Daemon, sh  # noqa: E402


def make(path, seed):
    if not os.path.exists(path):
        sh(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
            f"cellauto=rule=110:size=640x360:rate=25:seed={seed}", "-f", "lavfi", "-i", f"sine=frequency={200 + seed % 500}",
            "-t", "10", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", path])
    return path


def upload(base, project, path, url):
    auth = "Basic " + base64.b64encode(f"{project}:secret-{project}".encode()).decode()
    req = urllib.request.Request(base + "/upload/init", data=json.dumps({"url": url, "bucket": project}).encode(),
                                 headers={"content-type": "application/json", "authorization": auth})
    upload_id = json.load(urllib.request.urlopen(req))["upload_id"]
    t = time.perf_counter()
    out = subprocess.run(["curl", "-sS", "-X", "POST", "-H", f"Authorization: {auth}", "-H", "Content-Type: application/octet-stream",
                          "--data-binary", f"@{path}", f"{base}/upload/{upload_id}"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout), time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--dir", default="bench-out")
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    work = os.path.abspath(args.dir)
    os.makedirs(work, exist_ok=True)
    root = os.path.join(work, "privacy-root")
    shutil.rmtree(root, ignore_errors=True)
    projects = ["a"] + [f"b{i}" for i in range(args.rounds)]
    keys = json.dumps([{"id": p, "key": f"secret-{p}", "project_id": p} for p in projects])
    known = make(os.path.join(work, "privacy-known.mp4"), 1)
    fresh = [make(os.path.join(work, f"privacy-fresh-{i}.mp4"), 100 + i) for i in range(args.rounds)]
    daemon = Daemon(args.binary, root, VIDCACHE__TRANSCODE__WORKERS="0", VIDCACHE__AUTH__API_KEYS=keys)
    try:
        stored, _ = upload(daemon.base, "a", known, "https://a.bench/known.mp4")
        assert stored["status"] == "new", stored
        theirs, nobodys = [], []
        for i in range(args.rounds):
            project = f"b{i}"
            # Alternate which goes first, so neither always follows the other.
            order = [("theirs", known), ("fresh", fresh[i])] if i % 2 == 0 else [("fresh", fresh[i]), ("theirs", known)]
            for kind, path in order:
                answer, secs = upload(daemon.base, project, path, f"https://{project}.bench/{kind}.mp4")
                assert answer["status"] == "new", (kind, answer)
                (theirs if kind == "theirs" else nobodys).append(secs)
        t, n = statistics.median(theirs), statistics.median(nobodys)
        print(f"streamed upload of a 10 s 640x360 video with sound, {args.rounds} projects, answer time:")
        print(f"  bytes another project holds (answered new): {[round(s * 1000) for s in theirs]} ms, median {t * 1000:.0f} ms")
        print(f"  bytes nobody holds (new), same generator:   {[round(s * 1000) for s in nobodys]} ms, median {n * 1000:.0f} ms")
        print(f"  known/new = {t / n:.2f} (1.00: the time tells nothing)")
    finally:
        daemon.stop()


if __name__ == "__main__":
    main()
