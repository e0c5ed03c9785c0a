"""`make bench`, BMN inference per video, features to proposals: vidkit's `vpropose` against
PaddleVideo's BMN (paddlevideo/modeling/backbones/bmn.py, dygraph, no_grad) followed by
bmn_metric.py's post-processing (its boundary_choose and soft_nms around the candidate loop, as
scripts/bmn_post_ref.py restates it, minus the CSV round trip). Same random weights (the Paddle
model's .pdparams imported by `vconvert --arch bmn`), same features ([100, 400] per video), same
threads. Runs in the paddle tier of scripts/peers.sh.

    python bench_bmn.py --bin BIN_DIR --dir DIR --threads 2 --json OUT [--videos 8] [--rounds 3]

vidkit is timed as a whole `vpropose` process over all videos (model load and mask build
included), Paddle inside a running Python (model built beforehand); each round alternates the
two; the ratio is the median of per-round ratios of seconds per video (below 1.0 is faster).
"""
import json
import os
import subprocess
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_rounds import alternate, arguments  # noqa: E402

warnings.filterwarnings("ignore")
# Paddle's CPU math library reads its thread count when it loads (make bench runs 2 threads).
os.environ.setdefault("OMP_NUM_THREADS", "2")
import pandas as pd  # noqa: E402
import paddle  # noqa: E402
from paddlevideo.metrics.bmn_metric import boundary_choose, soft_nms  # noqa: E402
from paddlevideo.modeling.backbones.bmn import BMN  # noqa: E402

T = 100


def paddle_proposals(model, x):
    """One video's proposals as BMNMetric.update + video_process compute them."""
    with paddle.no_grad():
        bm, start, end = model(paddle.to_tensor(x[None]))
    bm, start, end = bm.numpy(), start[0].numpy(), end[0].numpy()
    bm = bm[0, 0] * bm[0, 1]
    smask, emask = boundary_choose(start), boundary_choose(end)
    smask[0], emask[-1] = 1.0, 1.0
    rows = []
    for d in range(T):
        for s in range(T):
            e = s + d
            if e < T and smask[s] == 1 and emask[e] == 1:
                rows.append([s / T, (e + 1) / T, start[s] * end[e] * bm[d, s]])
    df = pd.DataFrame(np.stack(rows), columns=["xmin", "xmax", "score"])
    if len(df) > 1:
        df = soft_nms(df, 0.4, 0.55, 0.9)
    return [(max(0, df.xmin.values[i]), min(1, df.xmax.values[i]), df.score.values[i]) for i in range(min(100, len(df)))]


def main():
    a = arguments()
    paddle.set_device("cpu")
    out = os.path.join(a.dir, "bmn")
    os.makedirs(os.path.join(out, "feats"), exist_ok=True)
    paddle.seed(0)
    model = BMN(tscale=T, dscale=T, prop_boundary_ratio=0.5, num_sample=32, num_sample_perbin=3)
    model.eval()
    pdparams = os.path.join(out, "bmn.pdparams")
    paddle.save({"backbone." + k: v for k, v in model.state_dict().items()}, pdparams)
    st = os.path.join(out, "bmn.safetensors")
    subprocess.run([os.path.join(a.bin, "vconvert"), "--arch", "bmn", "-q", pdparams, st], check=True)
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((T, 400)).astype(np.float32) for _ in range(a.videos)]
    for i, f in enumerate(feats):
        np.save(os.path.join(out, "feats", f"v_{i:03d}.npy"), f)
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    paddle_proposals(model, feats[0].T.copy())  # warm-up

    def ours():
        subprocess.run([os.path.join(a.bin, "vpropose"), "--model", st, os.path.join(out, "feats"), "-q",
                        "-o", os.path.join(out, "proposals.jsonl")], check=True, env=env)

    def theirs():
        for f in feats:
            paddle_proposals(model, f.T.copy())

    v_med, r_med, ratio, rounds = alternate(ours, theirs, a.rounds, a.videos)
    row = {"model": "bmn (T = D = 100, 400-d features)", "vidkit_s_per_video": v_med,
           "paddle_s_per_video": r_med, "ratio": ratio,
           "rounds": rounds}
    print(f"BMN features -> proposals, {a.threads} threads, {a.videos} videos per round: vidkit "
          f"{row['vidkit_s_per_video']:.3f} s/video, PaddleVideo {row['paddle_s_per_video']:.3f} s/video, "
          f"ratio {row['ratio']:.2f} (rounds {row['rounds']})")
    with open(a.json, "w") as f:
        json.dump({"threads": a.threads, "paddle": paddle.__version__, "rows": [row]}, f, indent=1)


if __name__ == "__main__":
    main()
