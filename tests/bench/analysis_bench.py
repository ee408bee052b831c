#!/usr/bin/env python3
"""Analysis benchmarks for vidcache (issue: StreamingBuffer, perceptual
near-duplicates, frames API). Every figure is measured beside its reference
in the same run:

  1. first perceptual hash during a 10 MB/s throttled upload of a 100 MB
     faststart MP4: the daemon's recorded `first_hash_at` minus the moment
     the client sent the first byte (goal <= 1 s);
  2. the cost of the analysis on the upload path: the same 100 MB (with an
     AAC soundtrack, so the audio is decoded and fingerprinted too) uploaded
     at full speed by curl with the analysis on and off (`analysis.enabled`),
     alternating, end to end (last byte -> ingest result included), plus the
     daemon's CPU seconds (goal: <= 10% slower);
  3. 10 frames from a 5-minute 720p video (GOP 250): vidcache's batch
     endpoint over HTTP against MediaRef's `batch_decode` on the same file
     and timestamps (goal: >= 2x faster);
  4. near-duplicate lookup with 1,000,000 signatures in the index
     (`cargo run --release --example index_bench`): p99 and bytes per
     signature (goal p99 <= 5 ms);
  5. precision and recall on the corpus of `tests/corpus.json`, and how
     many of its look-alikes are taken for another video: vidcache,
     videohash 3.0.1 and vpdq 0.2.5;
  6. the false-merge margin at scale (`--only scale`): 1,000 distinct
     generated videos (fractals, cellular automata, noise, gradients, text
     slides, moving shapes; with a tone, noise, a melody or no sound)
     uploaded to one daemon with default settings (every near-duplicate
     answer is a false merge), and the closest distance any two of them
     reach against the threshold (`examples/dedup_margin.rs`).

    python3 tests/bench/analysis_bench.py --binary ~/.cache/vidcache/target/release/vidcache
"""
import argparse, http.client, json, os, shutil, statistics, subprocess, sys, time, urllib.request
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upload_bench import Daemon, sh  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ffmpeg(args, out):
    if not os.path.exists(out):
        sh(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args.split(), out + ".tmp.mp4"])
        os.rename(out + ".tmp.mp4", out)
    return out


def post_json(base, path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req))


def get_json(base, path):
    return json.load(urllib.request.urlopen(base + path))


def stream_upload(daemon, path, url, rate=None, piece=256 << 10):
    """Streams `path` with chunked encoding, at `rate` bytes/s if given.
    Answers (result, time of the first byte sent, seconds in all)."""
    upload_id = post_json(daemon.base, "/upload/init", {"url": url, "bucket": "bench"})["upload_id"]
    first = {}

    def body():
        with open(path, "rb") as f:
            start = time.time()
            sent = 0
            while True:
                data = f.read(piece)
                if not data:
                    return
                if rate:
                    wait = start + sent / rate - time.time()
                    if wait > 0:
                        time.sleep(wait)
                first.setdefault("t", time.time())
                sent += len(data)
                yield data

    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=600)
    t = time.perf_counter()
    conn.request("POST", f"/upload/{upload_id}", body=body(), headers={"content-type": "application/octet-stream"},
                 encode_chunked=True)
    response = conn.getresponse()
    result = json.loads(response.read())
    elapsed = time.perf_counter() - t
    assert response.status == 200, result
    return result, first["t"], elapsed


def fresh_daemon(binary, root):
    """A daemon on an empty storage root, so every upload is new."""
    shutil.rmtree(root, ignore_errors=True)
    return Daemon(binary, root)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def iso(ts):
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def first_hash(binary, work, size_mb):
    # With a soundtrack, so the analysis also decodes and fingerprints audio.
    audio = "aevalsrc=0.3*sin(2*PI*t*(330+110*mod(floor(t*3)\\,4))):s=44100"
    src = ffmpeg(f"-f lavfi -i testsrc2=size=1280x720:rate=25,noise=alls=12:allf=t:all_seed=1 -f lavfi -i {audio} "
                 f"-t 60 -c:v libx264 -preset ultrafast -b:v {size_mb * 8 * 1000 // 60}k -pix_fmt yuv420p "
                 f"-c:a aac -b:a 128k -movflags +faststart",
                 os.path.join(work, f"fast-{size_mb}mb-av.mp4"))
    daemon = fresh_daemon(binary, os.path.join(work, "store-first"))
    try:
        result, t0, elapsed = stream_upload(daemon, src, "https://bench.test/throttled", rate=10_000_000)
        meta = get_json(daemon.base, f"/meta/{result['hash']}")
        a = meta["analysis"]
        return {
            "size_mb": round(os.path.getsize(src) / 1e6, 1),
            "upload_s": round(elapsed, 2),
            "first_hash_after_first_byte_s": round(iso(a["first_hash_at"]) - t0, 3),
            "last_byte_after_first_byte_s": round(iso(a["bytes_complete_at"]) - t0, 3),
            "samples": a["samples"],
            "packets_skipped": a["packets_skipped"],
        }
    finally:
        daemon.stop()


def overhead(binary, work, rounds):
    src = os.path.join(work, "fast-100mb-av.mp4")
    runs = {"on": [], "off": []}
    cpu = {"on": [], "off": []}
    for r in range(rounds):
        for mode in ("on", "off"):
            os.environ["VIDCACHE__ANALYSIS__ENABLED"] = "true" if mode == "on" else "false"
            daemon = fresh_daemon(binary, os.path.join(work, f"store-overhead-{mode}"))
            os.environ.pop("VIDCACHE__ANALYSIS__ENABLED")
            try:
                before = cpu_seconds(daemon.proc.pid)
                # curl, as in upload_bench.py: a client that costs little CPU of its own.
                result, elapsed = daemon.upload(src, f"https://bench.test/{mode}/{r}")
                assert result["status"] == "new", result
                runs[mode].append(os.path.getsize(src) / elapsed / 1e6)
                cpu[mode].append(cpu_seconds(daemon.proc.pid) - before)
            finally:
                daemon.stop()
    on, off = statistics.median(runs["on"]), statistics.median(runs["off"])
    return {"MB/s with analysis": [round(x) for x in runs["on"]], "MB/s without": [round(x) for x in runs["off"]],
            "CPU s with": [round(x, 2) for x in cpu["on"]], "CPU s without": [round(x, 2) for x in cpu["off"]],
            "slowdown": round(1 - on / off, 3)}


def frames(binary, work):
    # A camera-like encode: noise, x264's default preset (B-frames), a keyframe every 10 s.
    src = ffmpeg("-f lavfi -i testsrc2=size=1280x720:rate=25,noise=alls=8:allf=t:all_seed=2 -t 300 -c:v libx264 "
                 "-g 250 -pix_fmt yuv420p -movflags +faststart",
                 os.path.join(work, "five-minutes-720p-gop250-medium.mp4"))
    times_ns = [int(t * 1e9) for t in (7.3, 33.1, 61.0, 98.6, 131.2, 170.4, 199.9, 233.3, 262.7, 291.5)]
    daemon = fresh_daemon(binary, os.path.join(work, "store-frames"))
    try:
        result, _, _ = stream_upload(daemon, src, "https://bench.test/frames")
        h = result["hash"]
        # An upload this fast is analysed to its end in the background after
        # finalize; measure the frames once that is over, not beside it.
        first = get_json(daemon.base, f"/meta/{h}")["analysis"]["analysed_at"]
        for _ in range(600):
            if get_json(daemon.base, f"/meta/{h}")["analysis"]["analysed_at"] != first:
                break
            time.sleep(0.2)
        vid, ref = [], []
        for _ in range(3):
            t = time.perf_counter()
            req = urllib.request.Request(f"{daemon.base}/video/{h}/frames", method="POST",
                                         data=json.dumps({"pts_ns": times_ns, "format": "jpeg"}).encode(),
                                         headers={"content-type": "application/json"})
            body = urllib.request.urlopen(req).read()
            vid.append(time.perf_counter() - t)
            assert len(body) > 10_000
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", MEDIAREF, src, json.dumps(times_ns)], check=True,
                                 capture_output=True, text=True)
            ref.append(float(out.stdout.strip().splitlines()[-1]))
        v, m = statistics.median(vid), statistics.median(ref)
        return {"vidcache batch s": [round(x, 3) for x in vid], "mediaref batch_decode s": [round(x, 3) for x in ref],
                "speedup": round(m / v, 1)}
    finally:
        daemon.stop()


# MediaRef in its own process (imports excluded from the timing).
MEDIAREF = """
import json, sys, time
from mediaref import MediaRef, batch_decode
src, times = sys.argv[1], json.loads(sys.argv[2])
t = time.perf_counter()
frames = batch_decode([MediaRef(uri=src, pts_ns=n) for n in times])
assert len(frames) == len(times)
print(time.perf_counter() - t)
"""


def index_bench():
    out = subprocess.run(["cargo", "run", "-q", "--release", "--example", "index_bench"], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip().splitlines()


def corpus(work):
    with open(os.path.join(ROOT, "tests", "corpus.json")) as f:
        definition = json.load(f)
    d = os.path.join(work, "corpus")
    os.makedirs(d, exist_ok=True)
    videos = []
    for s in definition["sources"]:
        audio = f"-f lavfi -i {s['audio']} -c:a aac -b:a 128k -shortest" if s.get("audio") else ""
        src = ffmpeg(f"-f lavfi -i {s['lavfi']} {audio} {definition['source_args']}",
                     os.path.join(d, f"{s['name']}.mp4"))
        videos.append((s["name"], "source", src))
    for s in definition["sources"]:
        src = os.path.join(d, f"{s['name']}.mp4")
        for t in definition["transforms"]:
            out = os.path.join(d, f"{s['name']}-{t['name']}.mp4")
            if not os.path.exists(out):
                sh(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", src, *t["args"].split(), out + ".tmp.mp4"])
                os.rename(out + ".tmp.mp4", out)
            videos.append((s["name"], t["name"], out))
    # The look-alikes: each a family of its own, so any match is a false one.
    for e in definition["lookalikes"]:
        videos.append((f"lookalike:{e['name']}", "source", ffmpeg(e["args"], os.path.join(d, f"lookalike-{e['name']}.mp4"))))
    return videos


def score(decisions):
    """decisions: (family, variant, matched family or None) in upload order."""
    tp = fp = fn = 0
    for family, variant, found in decisions:
        if variant == "source":
            fp += found is not None
        elif found == family:
            tp += 1
        else:
            fn += 1
            fp += found is not None
    lookalike_merges = sum(1 for f, _, m in decisions if f.startswith("lookalike:") and m is not None)
    return {"precision": round(tp / max(tp + fp, 1), 3), "recall": round(tp / max(tp + fn, 1), 3),
            "look-alikes taken for another": lookalike_merges,
            "missed": [f"{f}/{v}" for f, v, m in decisions if v != "source" and m != f],
            "false": [f"{f}/{v}->{m}" for f, v, m in decisions if m is not None and m != f]}


def dedup_vidcache(binary, work, videos):
    os.environ["VIDCACHE__DEDUP__NEAR_DUPLICATE"] = "keep"
    daemon = fresh_daemon(binary, os.path.join(work, "store-corpus"))
    os.environ.pop("VIDCACHE__DEDUP__NEAR_DUPLICATE")
    try:
        family_of, decisions = {}, []
        t = time.perf_counter()
        for family, variant, path in videos:
            result, _, _ = stream_upload(daemon, path, f"https://corpus.test/{family}/{variant}")
            family_of[result["hash"]] = family
            near = result.get("near_duplicate_of")
            decisions.append((family, variant, family_of.get(near) if near else None))
        return score(decisions), time.perf_counter() - t
    finally:
        daemon.stop()


def dedup_videohash(videos):
    import PIL.Image
    if not hasattr(PIL.Image, "ANTIALIAS"):
        PIL.Image.ANTIALIAS = PIL.Image.LANCZOS  # videohash 3.0.1 predates Pillow 10
    from videohash import VideoHash
    seen, decisions = [], []
    t = time.perf_counter()
    for family, variant, path in videos:
        h = VideoHash(path=path)
        best = min(((h - other, fam) for other, fam in seen), default=(99, None))
        decisions.append((family, variant, best[1] if best[0] <= 15 else None))  # videohash's is_similar: <= 15 bits
        seen.append((h, family))
    return score(decisions), time.perf_counter() - t


def dedup_vpdq(videos):
    import vpdq
    seen, decisions = [], []
    t = time.perf_counter()

    def match(q, c, distance=31, quality=50):
        # vpdq's reference rule: the share of each side's good frames within
        # `distance` of some frame of the other; both >= 80% is a match.
        q = [f for f in q if f.quality >= quality]
        c = [f for f in c if f.quality >= quality]
        if not q or not c:
            return 0.0, 0.0
        qm = sum(any(a.hamming_distance(b) <= distance for b in c) for a in q) / len(q)
        cm = sum(any(a.hamming_distance(b) <= distance for b in q) for a in c) / len(c)
        return qm, cm

    for family, variant, path in videos:
        features = vpdq.computeHash(path)
        found = None
        for other, fam in seen:
            qm, cm = match(features, other)
            if qm >= 0.8 and cm >= 0.8:
                found = fam
                break
        decisions.append((family, variant, found))
        seen.append((features, family))
    return score(decisions), time.perf_counter() - t


WORDS = ("alpha bravo cedar delta ember fjord gamma harbor indigo jasper kepler lumen magma nectar onyx "
         "prism quartz raven sierra tundra umber vortex willow xenon yonder zephyr budget roadmap quarter "
         "launch review summit garden kitchen orbit signal").split()
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def scale_source(i):
    """The lavfi graphs of distinct video number `i`: its pictures, its sound
    (or None) and its length in seconds, all drawn from a generator seeded
    with `i`."""
    import random
    r = random.Random(i)
    size, rate = "320x240", 10
    colour = lambda: "0x%06x" % r.randrange(1 << 24)  # noqa: E731
    kind = i % 8
    if kind == 0:
        # Each zoom has a centre of its own: a cell of a 25 x 5 grid over the
        # set's neighbourhood (0.09 by 0.4 apart), and no wide views. (Until
        # 2026-12-04 centres were drawn anywhere and views were as wide as
        # 2.5, so zooms whose centres fell near each other passed through the
        # same view: the same footage under two seeds. See BENCHMARKS.md.)
        cell = i // 8 % 125
        s = r.uniform(0.02, 0.4)
        video = (f"mandelbrot=size={size}:rate={rate}:maxiter=200:"
                 f"start_x={-1.9 + (cell % 25 + r.uniform(0.3, 0.7)) * 0.092:.4f}:"
                 f"start_y={-1.0 + (cell // 25 + r.uniform(0.3, 0.7)) * 0.4:.4f}:"
                 f"start_scale={s:.4f}:end_scale={s / r.uniform(2, 40):.5f}")
    elif kind == 1:
        video = (f"life=size={size}:rate={rate}:seed={r.randrange(1 << 30)}:ratio={r.uniform(0.1, 0.6):.2f}:"
                 f"mold={r.randrange(0, 40)}:life_color={colour()}:death_color={colour()}:mold_color={colour()}")
    elif kind == 2:
        video = (f"cellauto=size={size}:rate={rate}:rule={r.choice([18, 22, 30, 45, 54, 60, 73, 90, 105, 110, 122, 126, 150, 182])}:"
                 f"seed={r.randrange(1 << 30)}:random_fill_ratio={r.uniform(0.2, 0.8):.2f}:scroll=1,"
                 f"colorchannelmixer=rr={r.uniform(0.2, 1):.2f}:gg={r.uniform(0.2, 1):.2f}:bb={r.uniform(0.2, 1):.2f}")
    elif kind == 3:
        video = (f"gradients=size={size}:rate={rate}:seed={r.randrange(1 << 30)}:n={r.randrange(2, 8)}:"
                 f"speed={r.uniform(0.005, 0.05):.4f}:type={r.choice(['linear', 'radial', 'circular', 'spiral'])}")
    elif kind == 4:
        video = (f"color=c={colour()}:size={size}:rate={rate},"
                 f"noise=alls={r.randrange(20, 100)}:allf=t+u:all_seed={r.randrange(1 << 30)}")
    elif kind == 5:
        slides = []
        for n in range(2):
            words = [" ".join(r.choice(WORDS) for _ in range(2)).upper() for _ in range(3)]
            for line, text in enumerate(words):
                slides.append(f"drawtext=fontfile={FONT}:text={text.replace(' ', '_')}:fontsize={r.randrange(20, 34)}:"
                              f"fontcolor={colour()}:x={r.randrange(5, 60)}:y={30 + line * 60 + r.randrange(0, 20)}:"
                              f"enable=between(t\\,{n * 5}\\,{n * 5 + 5})")
        video = f"color=c={colour()}:size={size}:rate={rate}," + ",".join(slides)
    elif kind == 6:
        boxes = []
        for _ in range(r.randrange(3, 7)):
            w, h = r.randrange(20, 140), r.randrange(20, 120)
            vx, vy = r.randrange(-60, 60), r.randrange(-40, 40)
            boxes.append(f"drawbox=x=mod({r.randrange(0, 300)}+{vx}*t\\,300):y=mod({r.randrange(0, 220)}+{vy}*t\\,220):"
                         f"w={w}:h={h}:color={colour()}:t=fill")
        video = f"color=c={colour()}:size={size}:rate={rate}," + ",".join(boxes)
    else:
        # Scrolling tickers. (This kind was `sierpinski` with a random hue
        # until 2026-12-04: its seeds only shift one white-on-black fractal,
        # which `hue` leaves white on black, so its "distinct" videos had the
        # same frames. See BENCHMARKS.md.)
        lines = []
        for line in range(r.randrange(2, 5)):
            text = "_".join(r.choice(WORDS).upper() for _ in range(4))
            lines.append(f"drawtext=fontfile={FONT}:text={text}:fontsize={r.randrange(18, 40)}:fontcolor={colour()}:"
                         f"x=w-mod(t*{r.randrange(30, 160)}+{r.randrange(0, 300)}\\,w+tw):y={10 + line * 55 + r.randrange(0, 25)}")
        video = f"color=c={colour()}:size={size}:rate={rate}," + ",".join(lines)
    sound = i // 8 % 4
    if sound == 0:
        audio = None
    elif sound == 1:
        audio = f"sine=f={r.randrange(150, 2500)}:sample_rate=44100"
    elif sound == 2:
        audio = f"anoisesrc=color={r.choice(['white', 'pink', 'brown'])}:seed={r.randrange(1 << 30)}:sample_rate=44100:amplitude=0.3"
    else:
        notes = [r.randrange(200, 900) for _ in range(4)]
        pitch = "+".join(f"{f}*eq(mod(floor(t*{r.choice([2, 3, 4])})\\,4)\\,{k})" for k, f in enumerate(notes))
        audio = f"aevalsrc=0.3*sin(2*PI*t*({pitch})):s=44100"
    return video, audio, r.choice([4, 6, 8, 10, 12])


def scale_corpus(work, n):
    """`n` distinct generated videos (`scale_source`), two ffmpeg at a time."""
    from concurrent.futures import ThreadPoolExecutor
    d = os.path.join(work, "scale")
    os.makedirs(d, exist_ok=True)

    def make(i):
        video, audio, seconds = scale_source(i)
        sound = f"-f lavfi -i {audio} -c:a aac -b:a 64k" if audio else ""
        return ffmpeg(f"-f lavfi -i {video} {sound} -t {seconds} -c:v libx264 -preset veryfast -crf 26 "
                      f"-pix_fmt yuv420p -movflags +faststart", os.path.join(d, f"distinct-{i:04}.mp4"))

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(make, range(n)))


def scale(binary, work, n):
    """Every one of `n` distinct videos uploaded to a daemon with default
    settings: any near-duplicate answer is a false merge. Then the margin,
    from the same analysis, by `examples/dedup_margin.rs`."""
    t = time.perf_counter()
    videos = scale_corpus(work, n)
    generated = time.perf_counter() - t
    # Default dedup settings; no transcoding, which would only compete for the CPU.
    os.environ["VIDCACHE__TRANSCODE__ON_UPLOAD"] = "false"
    daemon = fresh_daemon(binary, os.path.join(work, "store-scale"))
    os.environ.pop("VIDCACHE__TRANSCODE__ON_UPLOAD")
    try:
        merges, t = [], time.perf_counter()
        for path in videos:
            result, _, _ = stream_upload(daemon, path, f"https://scale.test/{os.path.basename(path)}")
            if result.get("near_duplicate_of") or result.get("status") == "duplicate":
                merges.append(f"{os.path.basename(path)} -> {result.get('near_duplicate_of') or result['hash']}")
        uploaded = time.perf_counter() - t
    finally:
        daemon.stop()
    out = subprocess.run(["cargo", "run", "-q", "--release", "--example", "dedup_margin", "--", *videos], cwd=ROOT,
                         check=True, capture_output=True, text=True)
    return {"generated_s": round(generated, 1), "uploaded_s": round(uploaded, 1),
            "daemon: false merges": len(merges), "daemon: merged": merges[:20],
            "margin": json.loads(out.stdout)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--dir", default="bench-out/analysis")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="first,overhead,frames,index,dedup,scale")
    ap.add_argument("--scale-videos", type=int, default=1000)
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    binary = os.path.abspath(args.binary)
    only = args.only.split(",")
    report = {}
    if "first" in only or "overhead" in only:
        report["first perceptual hash, 10 MB/s upload"] = first_hash(binary, args.dir, 100)
        print(json.dumps(report, indent=2), flush=True)
    if "overhead" in only:
        report["analysis on the upload path"] = overhead(binary, args.dir, args.rounds)
        print(json.dumps(report, indent=2), flush=True)
    if "frames" in only:
        report["10 frames from 5 min of 720p"] = frames(binary, args.dir)
        print(json.dumps(report, indent=2), flush=True)
    if "index" in only:
        report["index, 1,000,000 signatures"] = index_bench()
        print(json.dumps(report, indent=2), flush=True)
    if "dedup" in only:
        videos = corpus(args.dir)
        for name, run in (("vidcache", lambda: dedup_vidcache(binary, args.dir, videos)),
                          ("videohash 3.0.1", lambda: dedup_videohash(videos)),
                          ("vpdq 0.2.5", lambda: dedup_vpdq(videos))):
            result, seconds = run()
            report[f"corpus ({len(videos)} videos): {name}"] = {**result, "seconds": round(seconds, 1)}
            print(json.dumps(report, indent=2), flush=True)
    if "scale" in only:
        report[f"false-merge margin, {args.scale_videos} distinct videos"] = scale(binary, args.dir, args.scale_videos)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
