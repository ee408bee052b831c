#!/usr/bin/env python3
"""Chunked uploads on the S3 backend: kept by one daemon against shared by
all (issue 16), in the same run, against the same s3s-fs on loopback.

One large real video goes through the chunked door (init, chunks four at a
time, finalize), with three layouts:
  - "one daemon, 512 KiB chunks (kept)": under the 1 MiB a shared chunk
    needs, so the upload is kept by the daemon that created it, in its
    spool, analysed while the chunks arrive; finalize uploads the spool to
    the bucket (the path every chunked upload took on S3 before shared
    uploads);
  - "one daemon, 8 MiB chunks (shared)": each chunk goes to the bucket as
    an object of its own as it arrives, with its BLAKE3 chaining values,
    and (since LocalCopies) into the daemon's spool, read by an early
    probe; finalize merges the hash, fetches nothing (every chunk is
    here), and writes the object's layout (the chunks are the object: one
    small PUT). Before layouts it joined the object inside the bucket
    (UploadPartCopy); before LocalCopies it fetched every chunk and
    uploaded the object;
  - "two daemons, 8 MiB chunks (shared)": the same, chunks alternating
    between two daemons on one PostgreSQL database: the finalizing daemon
    fetches the half the other one took.
For each: throughput (init to the last chunk's answer), finalize latency
(as the client sees it), the daemons' CPU seconds per GiB, s3s-fs's, and
peak RSS; then one read of the whole object through the daemon (`GET
/video/{hash}`, from the bucket: one object, or the pieces a layout names)
piped into b3sum. The hashes are checked against b3sum of the source.

    python3 tests/bench/shared_bench.py --binary target/release/vidcache [--size-mib 1024] [--rounds 2]
"""
import argparse, concurrent.futures, http.client, json, os, shutil, statistics, subprocess, sys, time, urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from upload_bench import Daemon, make_source  # noqa: E402
from s3_bench import KEYS, REPO, cpu_seconds, s3s_pid  # noqa: E402

PG = "postgres://postgres@127.0.0.1:5432"


def fresh_database(name):
    subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-c", f"DROP DATABASE IF EXISTS {name}"],
                   check=True, capture_output=True)
    subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {name}"],
                   check=True, capture_output=True)
    return f"{PG}/{name}"


def post(base, path, body=None, data=None, timeout=600):
    host, port = base.replace("http://", "").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    if data is None:
        payload, headers = json.dumps(body or {}).encode(), {"content-type": "application/json"}
    else:
        payload, headers = data, {"content-type": "application/octet-stream"}
    conn.request("POST", path, body=payload, headers=headers)
    answer = conn.getresponse()
    text = answer.read()
    conn.close()
    if answer.status >= 300:
        raise SystemExit(f"POST {path}: {answer.status} {text[:300]}")
    return json.loads(text)


def chunked_upload(daemons, src, chunk):
    size = os.path.getsize(src)
    init = post(daemons[0].base, "/videos/init", {"filename": "bench.mkv", "size": size, "chunk_size": chunk})
    upload_id, total = init["upload_id"], init["total_chunks"]

    def send(i):
        with open(src, "rb") as f:
            f.seek(i * chunk)
            data = f.read(chunk)
        post(daemons[i % len(daemons)].base, f"/videos/upload_chunk/{upload_id}/{i}", data=data)

    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(send, range(total)))
    sent = time.perf_counter() - t
    t = time.perf_counter()
    result = post(daemons[-1].base, f"/videos/finalize/{upload_id}")
    return result, sent, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--dir", default="bench-out")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    work = os.path.abspath(os.path.join(a.dir, "s3s-shared"))
    endpoint = subprocess.run(["bash", os.path.join(REPO, ".ci/s3.sh"), "start", work], check=True,
                              capture_output=True, text=True).stdout.strip()
    try:
        run(a, work, endpoint)
    finally:
        subprocess.run(["bash", os.path.join(REPO, ".ci/s3.sh"), "stop", work])


def run(a, work, endpoint):
    src = os.path.join(a.dir, f"source-{a.size_mib}m.mkv")
    print(f"making the source ({a.size_mib} MiB) ...", flush=True)
    make_source(src, a.size_mib)
    size = os.path.getsize(src)
    gib = size / 2**30
    expected = subprocess.run(["b3sum", "--no-names", src], check=True, capture_output=True, text=True).stdout.strip()
    layouts = [("one daemon, 512 KiB chunks (kept)", 1, 512 << 10), ("one daemon, 8 MiB chunks (shared)", 1, 8 << 20),
               ("two daemons, 8 MiB chunks (shared)", 2, 8 << 20)]
    rows = {name: [] for name, _, _ in layouts}
    for r in range(a.rounds):
        for name, count, chunk in layouts:
            subprocess.run(["sync"])
            tag = f"shared_bench_{r}_{count}_{chunk >> 10}"
            database = fresh_database(tag)
            bucket = f"bench-{tag.replace('_', '-')}-{int(time.time())}"
            settings = dict(VIDCACHE__STORAGE__BACKEND="s3", VIDCACHE__STORAGE__S3__ENDPOINT=endpoint,
                            VIDCACHE__STORAGE__S3__BUCKET=bucket, VIDCACHE__DATABASE__URL=database,
                            VIDCACHE__TRANSCODE__WORKERS="0", VIDCACHE__TRANSCODE__ON_UPLOAD="false",
                            VIDCACHE__UPLOAD__EARLY_PROBES="4", VIDCACHE__STORAGE__S3__SHARE_UPLOADS="true",
                            **KEYS)
            roots = [os.path.abspath(os.path.join(a.dir, f"store-{tag}-{i}")) for i in range(count)]
            daemons = []
            try:
                for root in roots:
                    shutil.rmtree(root, ignore_errors=True)
                    daemons.append(Daemon(a.binary, root, **settings))
                cpu0 = [cpu_seconds(d.proc.pid) for d in daemons]
                store0 = cpu_seconds(s3s_pid(work))
                result, sent, fin = chunked_upload(daemons, src, chunk)
                cpu = sum(cpu_seconds(d.proc.pid) - c for d, c in zip(daemons, cpu0))
                store_cpu = cpu_seconds(s3s_pid(work)) - store0
                rss = max(d.peak_rss_mb() for d in daemons)
                t = time.perf_counter()
                read = subprocess.run(f"curl -sf {daemons[0].base}/video/{result['hash']} | b3sum --no-names",
                                      shell=True, check=True, capture_output=True, text=True).stdout.strip()
                read_s = time.perf_counter() - t
            finally:
                for d in daemons:
                    d.stop()
                for root in roots:
                    shutil.rmtree(root, ignore_errors=True)
            assert result["status"] == "new" and result["hash"] == expected, result
            assert read == expected, f"the object read back hashes to {read}"
            rows[name].append(dict(mbs=size / (sent + fin) / 1e6, fin=fin * 1000, cpu=cpu / gib,
                                   store_cpu=store_cpu / gib, rss=rss, read=size / read_s / 1e6))
            x = rows[name][-1]
            print(f"round {r + 1} {name}: {x['mbs']:.0f} MB/s, finalize {x['fin']:.0f} ms, daemons "
                  f"{x['cpu']:.2f} CPU-s/GiB, s3s-fs {x['store_cpu']:.2f} CPU-s/GiB, peak RSS {x['rss']:.0f} MB, "
                  f"read back {x['read']:.0f} MB/s", flush=True)
    med = lambda name, k: statistics.median(x[k] for x in rows[name])
    base = layouts[0][0]
    print()
    print(f"| chunked upload on S3, {a.size_mib} MiB, 4 chunks in flight, median of {a.rounds} | MB/s (init to "
          f"result) | finalize, ms | daemons CPU-s/GiB | s3s-fs CPU-s/GiB | peak RSS, MB | MB/s / kept | "
          f"read back, MB/s | read / kept's |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, _, _ in layouts:
        print(f"| {name} | {med(name, 'mbs'):.0f} | {med(name, 'fin'):.0f} | {med(name, 'cpu'):.2f} | "
              f"{med(name, 'store_cpu'):.2f} | {med(name, 'rss'):.0f} | {med(name, 'mbs') / med(base, 'mbs'):.2f} | "
              f"{med(name, 'read'):.0f} | {med(name, 'read') / med(base, 'read'):.2f} |")


if __name__ == "__main__":
    main()
