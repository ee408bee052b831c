#!/usr/bin/env python3
"""Upload page benchmark (issue: browser pages).

Uploads one large real video through the upload page in headless Chromium
(Debian's, driven by tests/clients/page_upload.mjs) and compares, in the
same run and against the same daemon:
  - the reference: `vidcache upload` (the Rust client of the same chunked API,
    4 chunks in flight, BLAKE3 per chunk) on the same file;
  - the page with its per-chunk SHA-256 (http://127.0.0.1, a secure context)
    and without it (http://vidcache.test mapped to 127.0.0.1: not a secure
    context, so no WebCrypto and no checksum);
  - WebCrypto SHA-256 alone in the page over the same file, against
    `sha256sum` on the same file;
  - the daemon's peak RSS after the uploads (memory stays flat).

Each upload goes to a fresh daemon (fresh root), so each is `new`.

    python3 tests/bench/pages_bench.py --binary target/release/vidcache [--size-mib 1024] [--rounds 2]
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import upload_bench  # noqa: E402
from upload_bench import sh  # noqa: E402

CLIENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients")
CHUNK = 8 << 20


def node(*args):
    out = subprocess.run(["node", "page_upload.mjs", *args], cwd=CLIENTS, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fresh_daemon(binary, work):
    root = os.path.join(work, "root")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    return upload_bench.Daemon(binary, root, VIDCACHE__TRANSCODE__ON_UPLOAD="false",
                               VIDCACHE__UPLOAD__DEFAULT_CHUNK_BYTES=str(CHUNK))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "vidcache-pages-bench"))
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    src = os.path.join(args.dir, "source.mkv")
    upload_bench.make_source(src, args.size_mib)
    size = os.path.getsize(src)
    mb = size / 1e6
    print(f"source: {mb:.0f} MB raw 720p Matroska, {CHUNK >> 20} MiB chunks, {args.rounds} rounds", flush=True)

    results = {"cli": [], "page_sha256": [], "page_plain": []}
    rss = []
    for r in range(args.rounds):
        for kind in results:
            daemon = fresh_daemon(args.binary, args.dir)
            try:
                if kind == "cli":
                    state = os.path.join(args.dir, "cli-state")
                    shutil.rmtree(state, ignore_errors=True)
                    t = time.perf_counter()
                    sh([args.binary, "upload", src, "--server", daemon.base, "--parallel", "4",
                        "--chunk-size", str(CHUNK), "--state-dir", state, "--quiet"], stdout=subprocess.DEVNULL)
                    seconds = time.perf_counter() - t
                else:
                    origin = daemon.base if kind == "page_sha256" else daemon.base.replace("127.0.0.1", "vidcache.test")
                    out = node("--origin", origin, "--file", src)
                    assert out["status"] == "new", out
                    assert out["checksum"] == (kind == "page_sha256"), out
                    seconds = out["seconds"]
                results[kind].append(seconds)
                rss.append(daemon.peak_rss_mb())
                print(f"round {r + 1} {kind:12s} {seconds:6.2f} s  {mb / seconds:6.1f} MB/s  daemon peak RSS {rss[-1]:.0f} MB",
                      flush=True)
            finally:
                daemon.stop()

    # SHA-256 alone: WebCrypto in the page against sha256sum, same file.
    daemon = fresh_daemon(args.binary, args.dir)
    try:
        webcrypto = min(node("--origin", daemon.base, "--file", src, "--sha256-only")["seconds"] for _ in range(args.rounds))
    finally:
        daemon.stop()
    sha256sum = min(upload_bench.timed(["sha256sum", src]) for _ in range(args.rounds))

    best = {k: min(v) for k, v in results.items()}
    print()
    print(f"| measure ({mb:.0f} MB, best of {args.rounds}) | seconds | MB/s | ratio |")
    print("|---|---|---|---|")
    print(f"| `vidcache upload` (reference: Rust client, 4 in flight, BLAKE3 per chunk) | {best['cli']:.2f} | {mb / best['cli']:.0f} | 1.00 |")
    for kind, label in (("page_sha256", "upload page, SHA-256 per chunk"), ("page_plain", "upload page, no checksum (not a secure context)")):
        print(f"| {label} | {best[kind]:.2f} | {mb / best[kind]:.0f} | {best['cli'] / best[kind]:.2f} of the reference's rate |")
    print(f"| WebCrypto SHA-256 in the page, 8 MiB slices (no upload) | {webcrypto:.2f} | {mb / webcrypto:.0f} | {sha256sum / webcrypto:.2f} of sha256sum's rate |")
    print(f"| `sha256sum` (reference) | {sha256sum:.2f} | {mb / sha256sum:.0f} | 1.00 |")
    print(f"\ndaemon peak RSS over all uploads: {max(rss):.0f} MB (file: {mb:.0f} MB)")


if __name__ == "__main__":
    main()
