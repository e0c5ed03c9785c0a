"""`make bench`, ETS captioning per video, features to captions (beam 3, at most 80 words), against
the PyTorch restatement of the 2019 Paddle zoo's fluid code (scripts/ets_ref.py: its infer_decoder
and beam_search / beam_search_decode ops, one video at a time as the reference decodes): vidkit's
`vcaption` on the same parameters (imported by `vconvert --arch ets` from the restatement's
fluid-named .pdparams) and features, ets.yaml's sizes (2048-d features, fc 1024, GRUs and decoder
512, embeddings 512) with a vocabulary of ActivityNet Captions' size (--words, 6000), same
threads. Runs in the models tier of scripts/peers.sh.

    python bench_ets.py --bin BIN_DIR --dir DIR --threads 2 --json OUT [--videos 8] [--rounds 3] [--steps 180]

Timed as bench_bmn_mmaction2.py: vidkit as a whole `vcaption` process over all videos (model
loading included), the reference inside a running Python with the model built; rounds alternate;
the ratio is the median of per-round ratios of seconds per video (below 1.0 is faster). Random
weights make every hypothesis run to the 80-word limit: the most work a video can take.
"""
import json
import os
import pickle
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
from bench_rounds import alternate  # noqa: E402
import ets_ref as ref  # noqa: E402
import argparse  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    for k, v in [("threads", 2), ("videos", 8), ("rounds", 3), ("steps", 180), ("words", 6000)]:
        ap.add_argument("--" + k, type=int, default=v)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = os.path.join(a.dir, "ets")
    os.makedirs(os.path.join(out, "feats"), exist_ok=True)
    torch.manual_seed(0)
    model = ref.ETS(2048, 1024, 512, 512, 512, a.words)
    pd = os.path.join(out, "ets.pdparams")
    with open(pd, "wb") as f:
        pickle.dump(model.fluid_state(), f, protocol=2)
    vocab = os.path.join(out, "dict.txt")
    with open(vocab, "w") as f:
        f.write("<s> -1\n<e> -1\n<unk> -1\n" + "".join("w%d 3\n" % i for i in range(3, a.words)))
    st = os.path.join(out, "ets.safetensors")
    subprocess.run([os.path.join(a.bin, "vconvert"), "--arch", "ets", "-q", pd, "--vocab", vocab, st], check=True)
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((a.steps, 2048)).astype(np.float32) for _ in range(a.videos)]
    for i, f in enumerate(feats):
        np.save(os.path.join(out, "feats", "v_%03d.npy" % i), f)
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    pred = os.path.join(out, "captions.jsonl")

    def ours():
        subprocess.run([os.path.join(a.bin, "vcaption"), "--model", st, os.path.join(out, "feats"), "--beams", "-q",
                        "-o", pred], check=True, env=env)

    def theirs():
        for f in feats:
            model.infer(torch.from_numpy(f), 3, 80)

    with torch.no_grad():
        model.infer(torch.from_numpy(feats[0]), 3, 80)  # warm-up
        v_med, r_med, ratio, rounds = alternate(ours, theirs, a.rounds, a.videos)
        # The same search: the best hypothesis's words and score (a near-tie may flip a word late
        # in 80 steps of float32 arithmetic; say so rather than fail).
        best = model.infer(torch.from_numpy(feats[0]), 3, 80)[0]
    first = json.loads(open(pred).readline())
    want = " ".join("w%d" % i for i in best[0][1:-1])
    same = first["caption"] == want
    row = {"model": "ets (ets.yaml sizes, %d words, %d steps of 2048-d features, beam 3, 80 words)" % (a.words, a.steps),
           "vidkit_s_per_video": v_med, "torch_s_per_video": r_med, "ratio": ratio, "rounds": rounds,
           "same_best_caption": same, "score_diff": abs(first["beams"][0]["score"] - best[1][-1])}
    print("ETS features -> captions, %d threads, %d videos per round: vidkit %.3f s/video, torch restatement "
          "%.3f s/video, ratio %.2f (rounds %s); best caption %s, score diff %.1e" % (
              a.threads, a.videos, v_med, r_med, ratio, rounds, "equal" if same else "DIFFERS", row["score_diff"]))
    with open(a.json, "w") as f:
        json.dump({"threads": a.threads, "torch": torch.__version__, "rows": [row]}, f, indent=1)


if __name__ == "__main__":
    main()
