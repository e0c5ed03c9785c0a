#!/usr/bin/env python3
"""ETS fixtures for vidkit's parity test (bins/tests/parity_ets.rs), in the models tier of
scripts/peers.sh (torch), from ets_ref.py's restatement of the 2019 zoo's fluid code.

Writes into OUT_DIR:
  ets.pdparams   the parameters under fluid's names, pickled as fluid.save does (a dict of
                 numpy arrays), random weights; the end word's output bias raised by --end-bias
                 so that some hypotheses end before max_length and some do not
  dict.txt       the vocabulary as generate_data.py writes it ("word count" lines, <s> <e> <unk>
                 first)
  feat{i}.npy    float32 [T_i, F]  one video each
  probs{i}.npy   float32 [L, V]  teacher-forced softmax after each word of words.json[i]
  words.json     the teacher-forced word ids per video (<s> first)
  beams.json     per video the hypotheses, best first: {"ids", "scores"} (accumulated log-probs)
  train.json     the batch loss over every video with its sentence (words.json without <s>),
                 and the gradients' sums of squares per parameter (fluid names)

Usage: export_ets_parity.py --out DIR [--feat 16] [--fc 12] [--hidden 8] [--dec 10] [--emb 6]
       [--vocab 40] [--beam 3] [--max-length 80] [--videos 3] [--seed 0] [--end-bias 2.0]
"""
import argparse
import json
import os
import pickle
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ets_ref as ref  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
for k, v in [("feat", 16), ("fc", 12), ("hidden", 8), ("dec", 10), ("emb", 6), ("vocab", 40),
             ("beam", 3), ("max-length", 80), ("videos", 3), ("seed", 0)]:
    ap.add_argument("--" + k, type=int, default=v)
ap.add_argument("--end-bias", type=float, default=2.0)
ap.add_argument("--forward-only", action="store_true", help="no loss and gradients")
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)
torch.manual_seed(a.seed)
m = ref.ETS(a.feat, a.fc, a.hidden, a.dec, a.emb, a.vocab)
with torch.no_grad():
    m.w("fc_9.b_0")[1] += a.end_bias
with open(os.path.join(a.out, "ets.pdparams"), "wb") as f:
    pickle.dump(m.fluid_state(), f, protocol=2)
with open(os.path.join(a.out, "dict.txt"), "w") as f:
    f.write("<s> -1\n<e> -1\n<unk> -1\n")
    for i in range(3, a.vocab):
        f.write("w%d %d\n" % (i, 1000 - i))

rng = np.random.default_rng(a.seed)
feats, words, beams = [], [], []
for i in range(a.videos):
    t = int(rng.integers(3, 12))
    feat = rng.standard_normal((t, a.feat)).astype(np.float32)
    w = [0] + [int(x) for x in rng.integers(2, a.vocab, int(rng.integers(1, 9)))]
    with torch.no_grad():
        probs = m.train_probs(torch.from_numpy(feat), w)
    np.save(os.path.join(a.out, "feat%d.npy" % i), feat)
    np.save(os.path.join(a.out, "probs%d.npy" % i), probs.numpy())
    hyps = m.infer(torch.from_numpy(feat), a.beam, a.max_length)
    beams.append([{"ids": h[0], "scores": h[1]} for h in hyps])
    feats.append(torch.from_numpy(feat))
    words.append(w)
with open(os.path.join(a.out, "words.json"), "w") as f:
    json.dump(words, f)
with open(os.path.join(a.out, "beams.json"), "w") as f:
    json.dump(beams, f)
if not a.forward_only:
    loss = m.loss(feats, [w[1:] for w in words])
    loss.backward()
    grads = {k.replace("__", "."): float((p.grad ** 2).sum()) for k, p in m.p.items()}
    with open(os.path.join(a.out, "train.json"), "w") as f:
        json.dump({"loss": float(loss.detach()), "grad_sq": grads}, f)
ends = sum(h["ids"][-1] == 1 for b in beams for h in b)
print("ets fixtures: %d videos, %d of %d hypotheses end with <e>" % (a.videos, ends, sum(map(len, beams))),
      file=sys.stderr)
