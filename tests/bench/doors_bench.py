#!/usr/bin/env python3
"""Front-door benchmark for vidcache (issue: chunked, multipart and tus uploads).

In one run, against references measured in the same run:
  1. `vidcache upload` (chunked API, 8 MiB chunks, 4 in parallel) of a 2 GiB
     real video: throughput as a ratio to `dd bs=8M conv=fdatasync` writing
     the same bytes to the same disk (goal >= 0.8);
  2. ten such uploads at once: the daemon's peak RSS (VmHWM, goal <= 150 MB);
  3. multipart: the 2 GiB file in 256 MiB parts through presigned URLs, and
     how long `complete` takes after the last part (parts are joined into the
     spool in the background as they arrive);
  4. tuspy uploading 1 GiB with 8 MiB chunks to vidcache's `/files/` and to
     rustus (`cargo install rustus`), same client, same chunk size:
     vidcache throughput / rustus throughput (goal >= 1.5; vidcache also
     hashes and probes).

    python3 tests/bench/doors_bench.py --binary target/release/vidcache [--size-mib 2048] [--tus-mib 1024]
"""
import argparse, base64, json, os, shutil, subprocess, sys, tempfile, time, urllib.parse, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upload_bench import Daemon, free_port, make_source, sh  # noqa: E402

CHUNK = 8 << 20

def timed(cmd, **kw):
    t = time.perf_counter(); sh(cmd, stdout=subprocess.DEVNULL, **kw); return time.perf_counter() - t

def cli_upload(binary, base, src, state_dir):
    out = subprocess.run([binary, "upload", "--quiet", "--server", base, "--chunk-size", str(CHUNK), "--parallel", "4",
                          "--state-dir", state_dir, src], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)

def tuspy_upload(endpoint, src):
    code = ("import sys\nfrom tusclient import client\n"
            "u = client.TusClient(sys.argv[1]).uploader(sys.argv[2], chunk_size=int(sys.argv[3]))\nu.upload()\nprint(u.url)")
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, endpoint, src, str(CHUNK)], check=True, capture_output=True, text=True)
    return time.perf_counter() - t, out.stdout.strip()

def multipart_upload(base, src, part=256 << 20):
    auth = {"authorization": "Basic " + base64.b64encode(b"bench:bench-secret").decode()}
    root = base + "/api/v1/project/bench/direct_upload/s3/multipart"
    def call(method, url, body=None, headers=None):
        return urllib.request.urlopen(urllib.request.Request(url, data=body, method=method, headers=headers or {}))
    size = os.path.getsize(src)
    created = json.load(call("POST", root, json.dumps({"filename": "bench.mkv", "metadata": {"size": size}}).encode(),
                             {"content-type": "application/json", **auth}))
    uid, key = created["uploadId"], urllib.parse.quote(created["key"])
    parts, t0 = [], time.perf_counter()
    with open(src, "rb") as f:
        while data := f.read(part):
            n = len(parts) + 1
            url = json.load(call("GET", f"{root}/{uid}/{n}?key={key}", headers=auth))["url"]
            parts.append({"PartNumber": n, "ETag": call("PUT", url, data).headers["ETag"]})
    t1 = time.perf_counter()
    result = json.load(call("POST", f"{root}/{uid}/complete?key={key}", json.dumps({"parts": parts}).encode(),
                            {"content-type": "application/json", **auth}))
    t2 = time.perf_counter()
    assert result["status"] == "new", result
    return {"parts": len(parts), "part_MiB": part >> 20, "parts_s": round(t1 - t0, 2), "complete_s": round(t2 - t1, 2),
            "total_MBps": round(size / (t2 - t0) / 1e6)}

def rustus_binary():
    for candidate in [shutil.which("rustus"), os.path.expanduser("~/.cargo/bin/rustus")]:
        if candidate and os.path.exists(candidate):
            return candidate
    return None

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--tus-mib", type=int, default=1024)
    ap.add_argument("--parallel-uploads", type=int, default=10)
    ap.add_argument("--workdir", default=os.path.join(os.getcwd(), "bench-out"))
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    src = os.path.join(args.workdir, f"source-{args.size_mib}.mkv")
    make_source(src, args.size_mib)
    size = os.path.getsize(src)
    report = {"size_bytes": size}

    # 1. dd, then the CLI uploader, on the same disk.
    scratch = tempfile.mkdtemp(dir=args.workdir)
    sh(["cat", src], stdout=subprocess.DEVNULL)  # both read from the page cache
    dd = timed(["dd", f"if={src}", f"of={scratch}/dd.out", "bs=8M", "conv=fdatasync", "status=none"])
    os.remove(f"{scratch}/dd.out")
    root = os.path.join(scratch, "root")
    daemon = Daemon(args.binary, root, VIDCACHE__TRANSCODE__WORKERS="0")
    t = time.perf_counter()
    summary = cli_upload(args.binary, daemon.base, src, os.path.join(scratch, "state"))
    vid = time.perf_counter() - t
    assert summary["result"]["status"] == "new", summary
    report["chunked"] = {"dd_s": round(dd, 2), "vidcache_s": round(vid, 2), "dd_MBps": round(size / dd / 1e6),
                         "vidcache_MBps": round(size / vid / 1e6), "ratio_to_dd": round(dd / vid, 2),
                         "rss_after_one_MB": round(daemon.peak_rss_mb())}
    daemon.stop(); shutil.rmtree(scratch)

    # 2. Ten at once (the same bytes, ten separate uploads; nine end as duplicates).
    scratch = tempfile.mkdtemp(dir=args.workdir)
    daemon = Daemon(args.binary, os.path.join(scratch, "root"), VIDCACHE__TRANSCODE__WORKERS="0")
    t = time.perf_counter()
    procs = [subprocess.Popen([args.binary, "upload", "--quiet", "--server", daemon.base, "--chunk-size", str(CHUNK),
                               "--parallel", "4", "--state-dir", os.path.join(scratch, f"state{i}"), src],
                              stdout=subprocess.PIPE, text=True) for i in range(args.parallel_uploads)]
    results = [json.loads(p.communicate()[0]) for p in procs]
    wall = time.perf_counter() - t
    assert all(p.returncode == 0 for p in procs)
    statuses = sorted(r["result"]["status"] for r in results)
    report["parallel"] = {"uploads": args.parallel_uploads, "wall_s": round(wall, 1),
                          "aggregate_MBps": round(size * args.parallel_uploads / wall / 1e6),
                          "peak_rss_MB": round(daemon.peak_rss_mb()), "statuses": statuses}
    daemon.stop(); shutil.rmtree(scratch)

    # 3. Multipart with presigned parts; complete's latency after the last part.
    scratch = tempfile.mkdtemp(dir=args.workdir)
    os.environ["VIDCACHE__AUTH__API_KEYS"] = '[{"id": "bench", "key": "bench-secret", "project_id": "bench"}]'
    daemon = Daemon(args.binary, os.path.join(scratch, "root"), VIDCACHE__TRANSCODE__WORKERS="0")
    report["multipart"] = multipart_upload(daemon.base, src)
    daemon.stop(); shutil.rmtree(scratch)

    # 4. tuspy against vidcache and rustus.
    tus_src = os.path.join(args.workdir, f"source-{args.tus_mib}.mkv")
    make_source(tus_src, args.tus_mib)
    tus_size = os.path.getsize(tus_src)
    scratch = tempfile.mkdtemp(dir=args.workdir)
    daemon = Daemon(args.binary, os.path.join(scratch, "root"), VIDCACHE__TRANSCODE__WORKERS="0")
    vid_tus, url = tuspy_upload(daemon.base + "/files/", tus_src)
    result = json.load(urllib.request.urlopen(url + "/result"))
    assert result["status"] == "new", result
    daemon.stop()
    tus = {"size_bytes": tus_size, "vidcache_s": round(vid_tus, 2), "vidcache_MBps": round(tus_size / vid_tus / 1e6)}
    rustus = rustus_binary()
    if rustus:
        # rustus by default does not fsync; vidcache fsyncs every PATCH before
        # answering it. Both rustus modes are measured: as shipped, and with
        # the same durability (--force-fsync true).
        for label, fsync in (("rustus", "false"), ("rustus_fsync", "true")):
            port = free_port()
            data = os.path.join(scratch, label)
            os.makedirs(data)
            proc = subprocess.Popen([rustus, "--host", "127.0.0.1", "--port", str(port), "--data-dir", data,
                                     "--url", "/files", "--max-body-size", str(2 * CHUNK), "--force-fsync", fsync],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                for _ in range(200):
                    try:
                        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/files/", method="OPTIONS"), timeout=1)
                        break
                    except urllib.error.HTTPError:
                        break
                    except Exception:
                        time.sleep(0.05)
                took, _ = tuspy_upload(f"http://127.0.0.1:{port}/files/", tus_src)
            finally:
                proc.kill(); proc.wait()
            tus.update({f"{label}_s": round(took, 2), f"{label}_MBps": round(tus_size / took / 1e6),
                        f"ratio_to_{label}": round(took / vid_tus, 2)})
    else:
        tus["rustus"] = "not installed (cargo install rustus --locked)"
    report["tus"] = tus
    shutil.rmtree(scratch)
    print(json.dumps(report, indent=2))

if __name__ == "__main__":
    main()
