"""Shared by the per-video benchmarks (bench_bmn.py, bench_bmn_mmaction2.py): their arguments and
the alternating rounds that time vidkit against a Python reference."""
import argparse
import statistics
import time


def arguments():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", required=True)
    return ap.parse_args()


def alternate(ours, theirs, rounds, videos):
    """Seconds per video of `ours()` and `theirs()` (each doing all videos), alternating for
    `rounds` rounds; the medians and the per-round ratios (below 1.0: vidkit is faster)."""
    ratios, a, b = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        ours()
        v = (time.perf_counter() - t0) / videos
        t0 = time.perf_counter()
        theirs()
        p = (time.perf_counter() - t0) / videos
        a.append(v)
        b.append(p)
        ratios.append(v / p)
    return statistics.median(a), statistics.median(b), statistics.median(ratios), [round(r, 3) for r in ratios]
