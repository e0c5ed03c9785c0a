"""`make bench`, models: PyTorch on CPU beside vidkit's bench_models example, same shapes and
thread count, alternating, ratios printed (vidkit time / PyTorch time; below 1.0 is faster).

    python bench_models.py --vidkit CMD --threads 2 --json OUT [--arch tsm_r50 ...]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import torch  # noqa: E402
import torchvision  # noqa: E402
from export_torch_parity import Recognizer  # noqa: E402  (our TSN/TSM wrapper)


def torch_times(arch, frames, size, reps):
    family, depth = arch.split("_r")
    net = Recognizer(getattr(torchvision.models, f"resnet{depth}")(weights=None), 400, frames, family == "tsm")
    x1 = torch.randn(1, frames, 3, size, size)
    x2 = torch.randn(2, frames, 3, size, size)
    labels = torch.tensor([1, 2])
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    net.eval()
    with torch.no_grad():
        net(x1)
    fwd, step = [], []
    for _ in range(reps):
        net.eval()
        t = time.perf_counter()
        with torch.no_grad():
            net(x1)
        fwd.append(time.perf_counter() - t)
        net.train()
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x2), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step.append(time.perf_counter() - t)
    return statistics.median(fwd), statistics.median(step)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vidkit", required=True, help="path of the bench_models example binary")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", required=True)
    ap.add_argument("--arch", action="append", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for arch in a.arch or ["tsn_r50", "tsm_r50"]:
        env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
        out = subprocess.run([a.vidkit, arch, "8", "224", str(a.reps)], capture_output=True, text=True, env=env, check=True)
        ours = json.loads(out.stdout)
        tf, ts = torch_times(arch, 8, 224, a.reps)
        rows.append({"arch": arch, "input": "8x224", "vidkit_forward_s": ours["forward_s"], "torch_forward_s": tf,
                     "forward_ratio": ours["forward_s"] / tf, "vidkit_train_step_s": ours["train_step_s"],
                     "torch_train_step_s": ts, "train_step_ratio": ours["train_step_s"] / ts})
    print(f"\nModels, CPU, {a.threads} threads, median of {a.reps} (forward: batch 1; train step: 2 clips, SGD momentum):")
    print(f"{'model':10} {'input':6} {'vidkit fwd':>11} {'torch fwd':>10} {'ratio':>6} {'vidkit step':>12} {'torch step':>11} {'ratio':>6}")
    for r in rows:
        print(f"{r['arch']:10} {r['input']:6} {r['vidkit_forward_s']:11.3f} {r['torch_forward_s']:10.3f} {r['forward_ratio']:6.2f}"
              f" {r['vidkit_train_step_s']:12.3f} {r['torch_train_step_s']:11.3f} {r['train_step_ratio']:6.2f}")
    print(f"load average: {os.getloadavg()[0]:.2f} (1-min)")
    with open(a.json, "w") as f:
        json.dump({"threads": a.threads, "reps": a.reps, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
