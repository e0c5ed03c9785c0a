"""`make bench`, BMN inference per video, features to proposals, against MMAction2's BMN: vidkit's
`vpropose` on an MMAction2 checkpoint (imported by `vconvert --arch bmn` from its .pth) against
the PyTorch restatement of MMAction2's `BMN.forward_test` + `post_processing`
(scripts/mmaction2_bmn_ref.py: mmcv does not install here, so MMAction2 itself cannot run), on
the same random weights and features ([100, 400] per video), same threads. Runs in the models
tier of scripts/peers.sh.

    python bench_bmn_mmaction2.py --bin BIN_DIR --dir DIR --threads 2 --json OUT [--videos 8] [--rounds 3]

Timed as bench_bmn.py times PaddleVideo: vidkit as a whole `vpropose` process over all videos,
the reference inside a running Python with the model built; rounds alternate; the ratio is the
median of per-round ratios of seconds per video (below 1.0 is faster).
"""
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
from bench_rounds import alternate, arguments  # noqa: E402
from mmaction2_bmn_ref import BMN, proposals  # noqa: E402

T, DURATION, FRAMES = 100, 123.4, 3000


def reference(model, x):
    with torch.no_grad():
        conf, start, end = model(torch.from_numpy(x[None]))
    return proposals(conf[0].numpy(), start[0].numpy(), end[0].numpy(), DURATION, FRAMES)


def main():
    a = arguments()
    torch.set_num_threads(a.threads)
    out = os.path.join(a.dir, "bmn_mmaction2")
    os.makedirs(os.path.join(out, "feats"), exist_ok=True)
    torch.manual_seed(0)
    model = BMN(T, 32).eval()
    pth = os.path.join(out, "bmn.pth")
    torch.save({"state_dict": model.state_dict()}, pth)
    st = os.path.join(out, "bmn.safetensors")
    subprocess.run([os.path.join(a.bin, "vconvert"), "--arch", "bmn", "-q", pth, st], check=True)
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((T, 400)).astype(np.float32) for _ in range(a.videos)]
    anno = {}
    for i, f in enumerate(feats):
        np.save(os.path.join(out, "feats", f"v_{i:03d}.npy"), f)
        anno[f"v_{i:03d}"] = {"duration_second": DURATION, "duration_frame": FRAMES}
    durations = os.path.join(out, "anno.json")
    json.dump(anno, open(durations, "w"))
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    reference(model, feats[0].T.copy())  # warm-up

    def ours():
        subprocess.run([os.path.join(a.bin, "vpropose"), "--model", st, os.path.join(out, "feats"), "--durations",
                        durations, "-q", "-o", os.path.join(out, "proposals.jsonl")], check=True, env=env)

    def theirs():
        for f in feats:
            reference(model, f.T.copy())

    v_med, r_med, ratio, rounds = alternate(ours, theirs, a.rounds, a.videos)
    # The same proposals, or the timing compares different work.
    first = json.loads(open(os.path.join(out, "proposals.jsonl")).readline())
    want = reference(model, feats[0].T.copy())
    assert len(first["segments"]) == len(want) and all(
        abs(g["segment"][0] - w["segment"][0]) < 1e-6 for g, w in zip(first["segments"], want)), "proposals differ"
    row = {"model": "bmn, MMAction2 (T = D = 100, 400-d features)", "vidkit_s_per_video": v_med,
           "mmaction2_s_per_video": r_med, "ratio": ratio,
           "rounds": rounds}
    print(f"BMN (MMAction2) features -> proposals, {a.threads} threads, {a.videos} videos per round: vidkit "
          f"{row['vidkit_s_per_video']:.3f} s/video, MMAction2 (torch restatement) "
          f"{row['mmaction2_s_per_video']:.3f} s/video, ratio {row['ratio']:.2f} (rounds {row['rounds']})")
    with open(a.json, "w") as f:
        json.dump({"threads": a.threads, "torch": torch.__version__, "rows": [row]}, f, indent=1)


if __name__ == "__main__":
    main()
