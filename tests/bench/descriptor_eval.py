#!/usr/bin/env python3
"""The frame descriptor chosen by measurement (issue 27): the daemon's 64-bit
gradient hash (its own analysis, dumped by `examples/dedup_real` with
`DUMP=FILE`) against PDQ, 256 bits with a quality score (vPDQ's per-frame
hash, PyPI `vpdq`), on the same videos and with the same pairing.

For a query video A and a stored video B: each informative frame of A
(gradient: information >= 24, the daemon's rule; PDQ: quality >= 50,
vPDQ's) takes its nearest frame of B, and the pair's distance is the
median of those nearest distances, as a share of the hash's bits. Time
order is not required here, so the distance of a distinct pair is a lower
bound (the pessimistic margin). A pair matches at a frame threshold `t`
when at least 60 % of A's frames have a nearest frame within `t`.

Positives: every copy against its own source. Negatives: every ordered
pair of distinct sources in all the dumps given (real footage, the
generated corpus and its look-alikes, the 1,000-video scale corpus).

    DUMP=/tmp/real.jsonl cargo run --release --example dedup_real -- real-corpus/
    python3 tests/bench/descriptor_eval.py /tmp/real.jsonl /tmp/generated.jsonl /tmp/scale.jsonl
"""
import json, sys
from collections import defaultdict

import numpy as np
import vpdq

SHARE = 0.6


def load(paths):
    videos = []
    for path in paths:
        with open(path) as f:
            for line in f:
                v = json.loads(line)
                grad = [int(h, 16) for _, h, info in v["samples"] if info >= 24]
                pdq = [f.hex for f in vpdq.computeHash(v["path"], seconds_per_hash=1) if f.quality >= 50]
                v["grad"] = np.array(grad, dtype=np.uint64).reshape(-1, 1)
                v["pdq"] = np.array([[int(h[i:i + 16], 16) for i in range(0, 64, 16)] for h in pdq],
                                    dtype=np.uint64).reshape(-1, 4)
                videos.append(v)
    return videos


def nearest(a, b):
    """For each frame of a, the bits to its nearest frame of b."""
    if len(a) == 0 or len(b) == 0:
        return None
    return np.bitwise_count(a[:, None, :] ^ b[None, :, :]).sum(-1).min(1)


def main():
    videos = load(sys.argv[1:])
    sources = {}
    for v in videos:
        if v["transform"] == "source":
            sources[v["family"]] = v
    report = {}
    for name, bits, thresholds in (("grad", 64, (8, 10, 13)), ("pdq", 256, (31, 40, 50, 64))):
        # Positives, per transform class.
        classes = defaultdict(list)
        for v in videos:
            if v["transform"] == "source" or v["family"] not in sources:
                continue
            d = nearest(v[name], sources[v["family"]][name])
            classes[v["transform"]].append(d)
        # Negatives: every ordered pair of distinct sources.
        fams = list(sources)
        negatives = []
        for i, x in enumerate(fams):
            for j, y in enumerate(fams):
                if i != j:
                    d = nearest(sources[x][name], sources[y][name])
                    if d is not None:
                        negatives.append((x, y, d))
        print(f"== {name} ({bits} bits): {len(negatives)} distinct ordered pairs")
        med = lambda d: float(np.median(d)) / bits
        shares = lambda d, t: float((d <= t).mean())
        loosest = {}
        for cls, ds in sorted(classes.items()):
            valid = [d for d in ds if d is not None]
            loosest[cls] = max(med(d) for d in valid) if valid else None
            found = {t: sum(shares(d, t) >= SHARE for d in valid) for t in thresholds}
            print(f"  {cls:12s} loosest median {loosest[cls] if loosest[cls] is None else round(loosest[cls], 3)}"
                  f"  matched at t={thresholds}: {[f'{found[t]}/{len(ds)}' for t in thresholds]}")
        closest = sorted(negatives, key=lambda n: med(n[2]))[:5]
        print("  closest distinct pairs (median):", [(x, y, round(med(d), 3)) for x, y, d in closest])
        for t in thresholds:
            false = sum(shares(d, t) >= SHARE for _, _, d in negatives)
            pos = [d for ds in classes.values() for d in ds if d is not None]
            found = sum(shares(d, t) >= SHARE for d in pos)
            print(f"  t={t:3d} ({t / bits:.3f}): copies matched {found}/{sum(len(ds) for ds in classes.values())}, "
                  f"distinct pairs matched {false}/{len(negatives)}")
        report[name] = {"loosest": loosest, "closest": [(x, y, med(d)) for x, y, d in closest]}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
