#!/usr/bin/env python3
"""Reference logits and gradients for vidkit's feature-sequence models (parity test fixtures).

PaddleVideo defines AttentionLSTM, AttentionCluster and NeXtVLAD in Paddle (the last two only in
the retired `paddle.fluid` static graph, which Paddle 3 no longer runs). This script restates
each, operation for operation, in PyTorch with the reference's parameter names, and writes for
random weights (fixed seed) and a padded batch of random features:

  OUT/model.pth              the state dict (vidkit's names: what `vconvert --arch A` imports)
  OUT/fixture.safetensors    x0, x1 (padded inputs [B, T, C]), lengths, logits (eval mode),
                             r and grad.<param> (gradients of sum(logits * r) in eval mode),
                             logits_train (NeXtVLAD: train-mode batch norm, no dropout)

References (cited per class below):
  PaddleVideo paddlevideo/modeling/heads/attention_lstm_head.py (AttentionLstmHead)
  PaddlePaddle/models PaddleCV/PaddleVideo/models/attention_cluster/shifting_attention.py,
      attention_cluster.py, logistic_model.py
  PaddlePaddle/models PaddleCV/PaddleVideo/models/nextvlad/nextvlad_model.py, clf_model.py

usage: export_sequence_parity.py --arch A --out DIR [--seed S]
"""
import argparse
import math
import os

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

DIMS = [12, 6]  # two modalities, as rgb + audio
CLASSES = 7
LENGTHS = [7, 4, 1]


class AttentionLstm(nn.Module):
    """AttentionLstmHead.forward, with paddle.nn.LSTM(direction='bidirectional',
    sequence_length=...) as torch's LSTM over a packed sequence (same gates, same order)."""

    def __init__(self, dims, emb=8, lstm=5, h1=16, h2=10, classes=CLASSES):
        super().__init__()
        for i, d in enumerate(dims):
            self.add_module(f"fc_feature{i}", nn.Linear(d, emb))
            self.add_module(f"bi_lstm{i}", nn.LSTM(emb, lstm, batch_first=True, bidirectional=True))
            self.add_module(f"att_fc{i}", nn.Linear(2 * lstm, 1))
        self.dropout = nn.Dropout(0.5)
        self.fc_out1 = nn.Linear(2 * lstm * len(dims), h1)
        self.fc_out2 = nn.Linear(h1, h2)
        self.fc_logit = nn.Linear(h2, classes)
        self.n = len(dims)
        self.spec = dict(feature_dims=dims, embedding_size=emb, lstm_size=lstm, hidden_sizes=[h1, h2])

    def forward(self, inputs):
        att_outs = []
        for i, (x, lengths, mask) in enumerate(inputs):
            out = torch.tanh(getattr(self, f"fc_feature{i}")(x))
            packed = nn.utils.rnn.pack_padded_sequence(out, lengths, batch_first=True, enforce_sorted=False)
            lstm_out, _ = getattr(self, f"bi_lstm{i}")(packed)
            lstm_out, _ = nn.utils.rnn.pad_packed_sequence(lstm_out, batch_first=True, total_length=x.shape[1])
            lstm_dropout = self.dropout(lstm_out)
            lstm_weight = getattr(self, f"att_fc{i}")(lstm_dropout)  # [B, T, 1]
            # "softmax replace": exp, masked by mean(mask, axis=2), normalised per video.
            lstm_exp = torch.exp(lstm_weight)
            lstm_mask = mask.mean(dim=2)  # [B, T]
            lstm_exp_with_mask = lstm_exp * lstm_mask.unsqueeze(-1)  # paddle.multiply(axis=0)
            lstm_denominator = lstm_exp_with_mask.sum(dim=1).pow(-1)  # [B, 1]
            lstm_softmax = lstm_exp * lstm_denominator.unsqueeze(1)
            lstm_scale = lstm_dropout * lstm_softmax
            lstm_pool = (lstm_scale * lstm_mask.unsqueeze(-1)).sum(dim=1)
            att_outs.append(lstm_pool)
        att_out = torch.cat(att_outs, dim=1)
        fc_out1 = torch.relu(self.fc_out1(att_out))
        fc_out2 = torch.tanh(self.fc_out2(fc_out1))
        return self.fc_logit(fc_out2)


class ShiftingAttention(nn.Module):
    """shifting_attention.py ShiftingAttentionModel.forward: a 1x1 conv gives one score per
    unit and step, softmax over the steps, then per unit a learnable scale/shift, L2
    normalisation and division by sqrt(units)."""

    def __init__(self, dim, units):
        super().__init__()
        self.conv = nn.Conv2d(dim, units, 1)
        g = math.sqrt(1.0 / math.sqrt(units))  # glorot(n_att)
        self.shift_w = nn.Parameter(torch.randn(units) * g)
        self.shift_b = nn.Parameter(torch.randn(units) * g)
        self.units = units

    def forward(self, x):
        n, seg, dim = x.shape
        trans_x = x.permute(0, 2, 1).unsqueeze(-1)
        scores = self.conv(trans_x).squeeze(-1)  # [N, units, L]
        weights = torch.softmax(scores.reshape(-1, seg), dim=-1).reshape(scores.shape)
        outs = []
        for i in range(self.units):
            weight = weights[:, i : i + 1, :].permute(0, 2, 1).expand(-1, -1, dim)
            shift = (x * weight).sum(dim=1) * self.shift_w[i] + self.shift_b[i]
            norm = torch.sqrt(torch.clamp((shift * shift).sum(dim=-1, keepdim=True), min=1e-12))
            outs.append(shift / norm / math.sqrt(self.units))
        return torch.cat(outs, dim=1)


class AttentionCluster(nn.Module):
    """attention_cluster.py build_model: shifting attention per modality, concat, dropout,
    fc1 (tanh), fc2 (tanh), logistic model (fc; sigmoid applied outside the logits)."""

    def __init__(self, dims, units=(3, 2), h1=16, h2=10, classes=CLASSES):
        super().__init__()
        for i, (d, u) in enumerate(zip(dims, units)):
            self.add_module(f"satt{i}", ShiftingAttention(d, u))
        self.dropout = nn.Dropout(0.5)
        self.fc1 = nn.Linear(sum(d * u for d, u in zip(dims, units)), h1)
        self.fc2 = nn.Linear(h1, h2)
        self.fc_logit = nn.Linear(h2, classes)
        self.spec = dict(feature_dims=dims, clusters=list(units), hidden_sizes=[h1, h2])

    def forward(self, inputs):
        outs = [getattr(self, f"satt{i}")(x) for i, (x, _, _) in enumerate(inputs)]
        out = self.dropout(torch.cat(outs, dim=1))
        return self.fc_logit(torch.tanh(self.fc2(torch.tanh(self.fc1(out)))))


class NeXtVLADBranch(nn.Module):
    """nextvlad_model.py NeXtVLAD.forward on LoD input: all valid frames of the batch stacked,
    sequence_pool('sum') per video."""

    def __init__(self, dim, clusters, groups, expansion):
        super().__init__()
        width = dim * expansion
        self.fc_expansion = nn.Linear(dim, width)
        self.fc_group_attention = nn.Linear(width, groups)
        self.cluster_weights = nn.Parameter(torch.randn(width, groups * clusters) * math.sqrt(2.0 / width))
        self.cluster_weights2 = nn.Parameter(torch.randn(clusters, width // groups) * math.sqrt(2.0 / clusters))
        self.bn1 = nn.BatchNorm1d(groups * clusters)
        self.bn2 = nn.BatchNorm1d(clusters * width // groups)
        self.k, self.g, self.w = clusters, groups, width // groups

    def forward(self, frames, lengths):
        x = self.fc_expansion(frames)
        attention = torch.sigmoid(self.fc_group_attention(x))
        activation = self.bn1(x @ self.cluster_weights)
        activation = torch.softmax(activation.reshape(-1, self.g, self.k), dim=-1)
        activation = activation * attention.unsqueeze(-1)
        bounds = np.cumsum([0] + list(lengths))
        pool = lambda t: torch.stack([t[a:b].sum(0) for a, b in zip(bounds[:-1], bounds[1:])])
        a_sum = pool(activation).sum(dim=1)  # [B, K]
        a = a_sum.unsqueeze(-1) * self.cluster_weights2
        activation2 = activation.permute(0, 2, 1)
        reshaped_input = x.reshape(-1, self.g, self.w)
        vlad = pool(activation2 @ reshaped_input) - a  # [B, K, w]
        vlad = vlad.permute(0, 2, 1)
        vlad = vlad / torch.sqrt(torch.clamp((vlad * vlad).sum(dim=1, keepdim=True), min=1e-12))
        return self.bn2(vlad.reshape(-1, self.k * self.w))


class NeXtVLAD(nn.Module):
    """nextvlad_model.py NeXtVLADModel.create_model: one NeXtVLAD per modality, concat,
    dropout, hidden fc (no bias) + BN, context gating (fc + BN + relu, fc + sigmoid), logistic."""

    def __init__(self, dims, modalities=("rgb", "audio"), clusters=4, groups=2, expansion=2, hidden=12,
                 reduction=4, classes=CLASSES):
        super().__init__()
        self.modalities = modalities
        for m, d in zip(modalities, dims):
            self.add_module(m, NeXtVLADBranch(d, clusters, groups, expansion))
        self.dropout = nn.Dropout(0.5)
        vlad = sum(clusters * d * expansion // groups for d in dims)
        self.hidden1_fc = nn.Linear(vlad, hidden, bias=False)
        self.hidden1_bn = nn.BatchNorm1d(hidden)
        self.gating_fc1 = nn.Linear(hidden, hidden // reduction, bias=False)
        self.gating_bn = nn.BatchNorm1d(hidden // reduction)
        self.gating_fc2 = nn.Linear(hidden // reduction, hidden, bias=False)
        self.fc_logit = nn.Linear(hidden, classes)
        self.spec = dict(modalities=list(modalities), feature_dims=dims, clusters=[clusters], groups=groups,
                         expansion=expansion, hidden_sizes=[hidden], gating_reduction=reduction)

    def forward(self, inputs):
        vlads = []
        for m, (x, lengths, _) in zip(self.modalities, inputs):
            frames = torch.cat([x[i, :l] for i, l in enumerate(lengths)])
            vlads.append(getattr(self, m)(frames, lengths))
        vlad = self.dropout(torch.cat(vlads, dim=1))
        activation = self.hidden1_bn(self.hidden1_fc(vlad))
        gates = torch.relu(self.gating_bn(self.gating_fc1(activation)))
        gates = torch.sigmoid(self.gating_fc2(gates))
        return self.fc_logit(activation * gates)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True, choices=["attention_lstm", "attention_cluster", "nextvlad"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    model = {"attention_lstm": AttentionLstm, "attention_cluster": AttentionCluster, "nextvlad": NeXtVLAD}[a.arch](DIMS)
    # Non-trivial batch-norm statistics, so eval mode tests them.
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm1d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(mod.weight, 0.5, 1.5)
            nn.init.uniform_(mod.bias, -0.5, 0.5)
    # AttentionCluster's reference takes fixed-length input (seg_num): no padding there.
    lengths = [LENGTHS[0]] * len(LENGTHS) if a.arch == "attention_cluster" else LENGTHS
    t = max(lengths)
    inputs, tensors = [], {}
    for i, d in enumerate(DIMS):
        x = torch.randn(len(lengths), t, d)
        mask = torch.zeros(len(lengths), t, d)
        for b, l in enumerate(lengths):
            x[b, l:] = 0.0
            mask[b, :l] = 1.0
        inputs.append((x, lengths, mask))
        tensors[f"x{i}"] = x
    tensors["lengths"] = torch.tensor(lengths, dtype=torch.float32)
    model.eval()
    logits = model(inputs)
    r = torch.randn_like(logits)
    model.zero_grad()
    (logits * r).sum().backward()
    tensors["logits"] = logits.detach()
    tensors["r"] = r
    for name, p in model.named_parameters():
        tensors["grad." + name] = p.grad.detach().clone()
    # Saved before the train-mode pass below updates the running statistics.
    state = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    if a.arch == "nextvlad":
        model.train()
        model.dropout.p = 0.0
        with torch.no_grad():
            tensors["logits_train"] = model(inputs)
    os.makedirs(a.out, exist_ok=True)
    torch.save(state, os.path.join(a.out, "model.pth"))
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(a.out, "fixture.safetensors"),
              metadata={"spec": __import__("json").dumps(model.spec)})


if __name__ == "__main__":
    main()
