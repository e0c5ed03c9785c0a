"""Reference ranges of PyTorch's HistogramObserver (the x86 backend's activation observer,
reduce_range) for bins/tests/parity_torch.rs: several cases of calibration batches, each batch
written as <case>_<i>.npy, and the range `_non_linear_param_search` picks in expected.json.

    python scripts/observer_ref.py --out DIR
"""
import argparse
import json
import os
import warnings

import numpy as np
import torch
from torch.ao.quantization.observer import HistogramObserver

warnings.filterwarnings("ignore")


def cases(rng):
    n = 30000
    # One batch of a normal: the search trims the thin tails.
    yield "normal", [rng.standard_normal(n)]
    # ReLU outputs with a long tail, over three batches whose range grows (re-binning).
    yield "relu_tail", [np.maximum(rng.standard_normal(n) * s, 0) ** 1.5 for s in (1.0, 2.0, 3.0)]
    # A uniform bulk with a few hundred far values: the tail is partly trimmed.
    yield "uniform_outliers", [np.concatenate([rng.uniform(-1, 3, n), rng.uniform(10, 40, 300)])]
    # Batches that shrink after the first: no re-binning, counts add.
    yield "shrinking", [rng.standard_normal(n) * s + 1 for s in (4.0, 1.0, 0.5)]
    # Laplace-distributed (heavy tails), two batches.
    yield "laplace", [rng.laplace(0, 1, n) for _ in range(2)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    expected = {}
    for name, batches in cases(rng):
        obs = HistogramObserver(reduce_range=True)
        for i, b in enumerate(batches):
            b = b.astype(np.float32)
            np.save(os.path.join(args.out, f"{name}_{i}.npy"), b)
            obs(torch.from_numpy(b))
        lo, hi = obs._non_linear_param_search()
        expected[name] = {
            "batches": len(batches),
            "range": [float(lo), float(hi)],
            "min_max": [float(obs.min_val), float(obs.max_val)],
        }
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    main()
