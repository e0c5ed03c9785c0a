"""A PyTorch restatement of the 2019 PaddlePaddle video zoo's ETS captioner (PaddlePaddle/models
release/1.8, PaddleCV/video/models/ets/ets_net.py), op for op as fluid computes it, for vidkit's
parity test (fluid does not run on Paddle 3). One video at a time, as the reference's test and
infer readers feed it (batch 1).

fluid ops restated:
  fc            x @ W (+ b); a list of inputs: one weight each, summed
  dynamic_gru   h_0 = 0; gate = x + b; [u, r] = sigmoid(gate[:, :2H] + h @ W.flat[:2H*H].view(H, 2H));
                c = tanh(gate[:, 2H:] + (r * h) @ W.flat[2H*H:].view(H, H)); h = u * (c - h) + h
                (operators/math/detail/gru_kernel.h, origin_mode False); is_reverse runs backwards
  gru_unit      the same step on one row per prefix (operators/gru_unit_op.h)
  sequence_softmax, sequence_pool(sum), sequence_expand: over the video's T steps
  beam_search   operators/math/beam_search.cc (Insert, ToMap, PruneEndBeams), is_accumulated
  beam_search_decode  operators/beam_search_decode_op.h (Backtrace, sort by final score)
"""
import numpy as np
import torch


def fc(x, w, b=None):
    y = x @ w
    return y if b is None else y + b


def gru_step(gate, h, w):
    hd = h.shape[1]
    flat = w.reshape(-1)
    gate_w = flat[: 2 * hd * hd].reshape(hd, 2 * hd)
    state_w = flat[2 * hd * hd:].reshape(hd, hd)
    ur = torch.sigmoid(gate[:, : 2 * hd] + h @ gate_w)
    u, r = ur[:, :hd], ur[:, hd:]
    c = torch.tanh(gate[:, 2 * hd:] + (r * h) @ state_w)
    return u * (c - h) + h


def dynamic_gru(x, w, b, reverse):
    t, hd = x.shape[0], w.shape[0]
    gate = x + b.reshape(1, -1)
    h = torch.zeros(1, hd, dtype=x.dtype)
    out = [None] * t
    for s in (range(t - 1, -1, -1) if reverse else range(t)):
        h = gru_step(gate[s:s + 1], h, w)
        out[s] = h
    return torch.cat(out, 0)


class ETS(torch.nn.Module):
    """Parameters under fluid's creation-order names (the training program's)."""

    def __init__(self, feat, fc_dim, hidden, dec, emb, vocab):
        super().__init__()
        shapes = {
            "fc_0.w_0": (feat, fc_dim), "fc_0.b_0": (fc_dim,),
            "fc_1.w_0": (fc_dim, 3 * hidden), "gru_0.w_0": (hidden, 3 * hidden), "gru_0.b_0": (1, 3 * hidden),
            "fc_2.w_0": (fc_dim, 3 * hidden), "gru_1.w_0": (hidden, 3 * hidden), "gru_1.b_0": (1, 3 * hidden),
            "fc_3.w_0": (2 * hidden, 1), "fc_4.w_0": (2 * hidden, dec), "fc_5.w_0": (2 * hidden, dec),
            "embedding_0.w_0": (vocab, emb),
            "fc_6.w_0": (dec, dec), "fc_7.w_0": (dec, 1),
            "fc_8.w_0": (emb, 3 * dec), "fc_8.w_1": (2 * hidden, 3 * dec),
            "gru_unit_0.w_0": (dec, 3 * dec), "gru_unit_0.b_0": (1, 3 * dec),
            "fc_9.w_0": (dec, vocab), "fc_9.b_0": (vocab,),
        }
        self.p = torch.nn.ParameterDict()
        for name, shape in shapes.items():
            scale = 0.1 if name.endswith("b_0") else 1.0 / np.sqrt(shape[0])
            self.p[name.replace(".", "__")] = torch.nn.Parameter(torch.randn(*shape) * scale)

    def w(self, name):
        return self.p[name.replace(".", "__")]

    def fluid_state(self):
        return {k.replace("__", "."): v.detach().numpy().astype(np.float32) for k, v in self.p.items()}

    def encoder(self, feat):
        w = self.w
        input_fc = torch.tanh(fc(feat, w("fc_0.w_0"), w("fc_0.b_0")))
        fw = dynamic_gru(fc(input_fc, w("fc_1.w_0")), w("gru_0.w_0"), w("gru_0.b_0"), False)
        bw = dynamic_gru(fc(input_fc, w("fc_2.w_0")), w("gru_1.w_0"), w("gru_1.b_0"), True)
        seq = torch.cat([fw, bw], 1)
        weights = torch.softmax(fc(seq, w("fc_3.w_0")), 0)  # sequence_softmax over the video
        vector = (seq * weights).sum(0, keepdim=True)  # sequence_pool sum
        proj = fc(seq, w("fc_4.w_0"))
        return seq, vector, proj

    def cell(self, x, hidden, seq, proj):
        """`cell` for K prefixes (each its own copy of the video, as sequence_expand makes)."""
        w = self.w
        state_proj = fc(hidden, w("fc_6.w_0"))  # [K, D]
        mixed = proj[None, :, :] + state_proj[:, None, :]  # sequence_expand + elementwise_add
        att = torch.softmax(fc(mixed, w("fc_7.w_0"))[..., 0], 1)  # [K, T]
        context = att @ seq  # elementwise_mul + sequence_pool sum
        gate = fc(x, w("fc_8.w_0")) + fc(context, w("fc_8.w_1")) + w("gru_unit_0.b_0")
        return gru_step(gate, hidden, w("gru_unit_0.w_0"))

    def boot(self, vector):
        return torch.tanh(fc(vector, self.w("fc_5.w_0")))

    def train_probs(self, feat, words):
        """Teacher forcing: softmax probabilities [L, V] after each word of `words`."""
        seq, vector, proj = self.encoder(feat)
        h = self.boot(vector)
        emb = self.w("embedding_0.w_0")[torch.as_tensor(words)]
        out = []
        for s in range(len(words)):
            h = self.cell(emb[s:s + 1], h, seq, proj)
            out.append(torch.softmax(fc(h, self.w("fc_9.w_0"), self.w("fc_9.b_0")), -1))
        return torch.cat(out, 0)

    def loss(self, feats, sentences, start=0, end=1):
        """cross_entropy on the probabilities, mean over every target word of the batch."""
        costs = []
        for feat, s in zip(feats, sentences):
            probs = self.train_probs(feat, [start] + list(s))
            target = torch.as_tensor(list(s) + [end])
            costs.append(-torch.log(probs[torch.arange(len(target)), target]))
        return torch.cat(costs).mean()

    @torch.no_grad()
    def infer(self, feat, beam_size, max_length, start=0, end=1):
        """infer_decoder + beam_search_decode: hypotheses (ids, per-word scores), best first."""
        seq, vector, proj = self.encoder(feat)
        state = self.boot(vector)
        steps = [([start], [0.0], [0])]  # (ids, scores, parent prefix) per step
        for _ in range(max_length):
            pre_ids, pre_scores, _ = steps[-1]
            emb = self.w("embedding_0.w_0")[torch.as_tensor(pre_ids)]
            state = self.cell(emb, state, seq, proj)
            prob = torch.softmax(fc(state, self.w("fc_9.w_0"), self.w("fc_9.b_0")), -1)
            topk_scores, topk_idx = torch.topk(prob, beam_size, dim=-1)
            accu = torch.log(topk_scores) + torch.as_tensor(pre_scores, dtype=torch.float32)[:, None]
            top = []  # Items (offset, id, score), fluid's Insert
            for offset, (pid, ps) in enumerate(zip(pre_ids, pre_scores)):
                cands = [(offset, end, np.float32(ps))] if pid == end else [
                    (offset, int(topk_idx[offset, d]), np.float32(accu[offset, d])) for d in range(beam_size)]
                for item in cands:
                    insert(top, item, beam_size)
            top.sort(key=lambda it: it[0])  # ToMap (stable)
            if all(it[1] == end and pre_ids[it[0]] == end for it in top):  # PruneEndBeams
                break
            parents = [it[0] for it in top]
            state = state[parents]
            steps.append(([it[1] for it in top], [float(it[2]) for it in top], parents))
        return backtrace(steps, end)


def less(a, b):
    return a[2] < b[2] or (a[2] == b[2] and a[0] < b[0])


def insert(top, item, beam):
    if len(top) < beam:
        top.append(item)
    elif less(item, top[beam - 1]):
        return
    k = len(top) - 2
    while k >= 0:
        if less(top[k], item):
            top[k + 1] = top[k]
        else:
            top[k + 1] = item
            return
        k -= 1
    top[0] = item


def backtrace(steps, end):
    ids, scores, parents = steps[-1]
    hyps = []
    for k in range(len(ids)):
        words, sc, at = [ids[k]], [scores[k]], parents[k]
        for s_ids, s_scores, s_parents in reversed(steps[:-1]):
            if s_ids[at] != end:
                words.append(s_ids[at])
                sc.append(s_scores[at])
            at = s_parents[at]
        hyps.append((words[::-1], sc[::-1]))
    hyps.sort(key=lambda h: -h[1][-1])
    return hyps
