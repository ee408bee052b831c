#!/usr/bin/env python3
"""Twenty uploads spread over two daemons against the same through one
(issue 16), in the same run.

Both set-ups are `vidcache serve` on one PostgreSQL database and one S3
bucket (s3s-fs on loopback, started with .ci/s3.sh), each daemon with its
own storage root. Twenty distinct real videos of `--size-mib` are streamed
at once (curl, chunked): all to one daemon, then alternately to two. For
each: aggregate throughput, and CPU seconds per GiB of the daemons, of
s3s-fs and of PostgreSQL (every postgres process), so the shared part
that saturates first can be named.

    python3 tests/bench/scale_bench.py --binary target/release/vidcache [--size-mib 200] [--uploads 20]
"""
import argparse, json, os, subprocess, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(__file__))
from upload_bench import Daemon  # noqa: E402
from s3_bench import KEYS, REPO, cpu_seconds, s3s_pid  # noqa: E402


def postgres_cpu():
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() not in ("postgres", "postmaster"):
                    continue
            total += cpu_seconds(int(pid))
        except OSError:
            pass
    return total


def make_sources(directory, count, size_mib):
    frame = 1280 * 720 * 3 // 2
    frames = max(2, size_mib * 2**20 // frame)
    paths = []
    for i in range(count):
        path = os.path.join(directory, f"scale-{size_mib}m-{i}.mkv")
        if not os.path.exists(path):
            # A different start of the test pattern: distinct bytes, same size.
            subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                            f"testsrc2=size=1280x720:rate=30,trim=start_frame={i * 7}", "-frames:v", str(frames),
                            "-c:v", "rawvideo", "-pix_fmt", "yuv420p", path], check=True)
        paths.append(path)
    return paths


def fresh_database():
    name = f"vidcache_scale_{int(time.time() * 1000)}"
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc", f"create database {name}"],
                   check=True)
    return name, f"postgres://postgres@127.0.0.1:5432/{name}"


def drop_database(name):
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc",
                    f"drop database if exists {name}"], check=False)


def run(binary, work, endpoint, sources, daemons, tag):
    name, url = fresh_database()
    bucket = f"scale-{tag}-{int(time.time())}"
    started = []
    try:
        for i in range(daemons):
            root = os.path.join(work, f"root-{tag}-{i}")
            subprocess.run(["rm", "-rf", root])
            started.append(Daemon(binary, root, VIDCACHE__DATABASE__URL=url, VIDCACHE__TRANSCODE__WORKERS="0",
                                  VIDCACHE__STORAGE__BACKEND="s3", VIDCACHE__STORAGE__S3__ENDPOINT=endpoint,
                                  VIDCACHE__STORAGE__S3__BUCKET=bucket, VIDCACHE__UPLOAD__MAX_SESSIONS_PER_KEY="100",
                                  **KEYS))
        before = [cpu_seconds(d.proc.pid) for d in started]
        store0, pg0 = cpu_seconds(s3s_pid(work)), postgres_cpu()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(len(sources)) as pool:
            results = list(pool.map(lambda p: started[p[0] % daemons].upload(p[1], f"https://scale.test/{tag}/{p[0]}"),
                                    enumerate(sources)))
        wall = time.perf_counter() - t0
        daemon_cpu = sum(cpu_seconds(d.proc.pid) - b for d, b in zip(started, before))
        store_cpu, pg_cpu = cpu_seconds(s3s_pid(work)) - store0, postgres_cpu() - pg0
    finally:
        for d in started:
            d.stop()
        drop_database(name)
    assert all(r["status"] == "new" for r, _ in results), [r for r, _ in results]
    total = sum(os.path.getsize(p) for p in sources)
    gib = total / 2**30
    return dict(mbs=total / wall / 1e6, wall=wall, daemon=daemon_cpu / gib, store=store_cpu / gib, pg=pg_cpu / gib)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--dir", default="bench-out")
    ap.add_argument("--size-mib", type=int, default=200)
    ap.add_argument("--uploads", type=int, default=20)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    work = os.path.abspath(os.path.join(a.dir, "scale-s3s"))
    print(f"making {a.uploads} sources of {a.size_mib} MiB ...", flush=True)
    sources = make_sources(a.dir, a.uploads, a.size_mib)
    endpoint = subprocess.run(["bash", os.path.join(REPO, ".ci/s3.sh"), "start", work], check=True,
                              capture_output=True, text=True).stdout.strip()
    try:
        one = run(a.binary, work, endpoint, sources, 1, "one")
        two = run(a.binary, work, endpoint, sources, 2, "two")
    finally:
        subprocess.run(["bash", os.path.join(REPO, ".ci/s3.sh"), "stop", work])
    print(f"| {a.uploads} uploads of {a.size_mib} MiB at once, PostgreSQL + S3 | one daemon | two daemons | two / one |")
    print("|---|---|---|---|")
    for k, label in [("mbs", "aggregate MB/s"), ("wall", "wall seconds"), ("daemon", "daemons' CPU-s per GiB"),
                     ("store", "s3s-fs CPU-s per GiB"), ("pg", "PostgreSQL CPU-s per GiB")]:
        print(f"| {label} | {one[k]:.2f} | {two[k]:.2f} | {two[k] / one[k] if one[k] else float('nan'):.2f} |")


if __name__ == "__main__":
    main()
