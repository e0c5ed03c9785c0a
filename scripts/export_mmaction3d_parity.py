#!/usr/bin/env python3
"""Reference values for vidkit's mmaction2 3D import (bins/tests/parity_mmaction3d.rs).

mmaction2 cannot be installed beside pytorchvideo here (it needs mmcv, which has no wheels for
this torch), so this script restates, in plain PyTorch, the modules an mmaction2 Recognizer3D
with a ResNet3d backbone and an I3DHead (or a ResNet3dSlowFast and a SlowFastHead) is made of, with mmaction2's attribute names, so that
`state_dict()` has exactly the keys an mmaction2 checkpoint has. Followed (open-mmlab/mmaction2
main, 4d6c934; open-mmlab/mmcv main, a8073c7):

  mmcv cnn/bricks/conv_module.py   ConvModule: .conv, then .bn (norm_cfg BN3d), then ReLU;
                                   bias='auto' = no bias when there is a norm
  mmcv cnn/bricks/non_local.py     _NonLocalNd L36-98 (g/theta/phi 1x1 ConvModules with bias,
                                   conv_out with the norm), L126-145 (embedded_gaussian,
                                   dot_product), L165-216 (forward), NonLocal3d L294-308
                                   (sub_sample: g and phi become Sequential(conv, MaxPool3d(1,2,2)))
  mmaction/models/backbones/resnet3d.py
                                   Bottleneck3d L201-333 (style 'pytorch', inflate_style '3x1x1':
                                   conv1 (3,1,1) when inflated, stride on conv2, non-local block
                                   after the final ReLU), ResNet3d.make_res_layer L591-647
                                   (downsample when spatial_stride != 1 or widths differ),
                                   _make_stem_layer L781-802, forward L873-885 (pool2 after layer1)
  mmaction/models/backbones/resnet3d_slowonly.py   ResNet3dSlowOnly defaults
  mmaction/models/heads/i3d_head.py L39-75          avg pool, dropout, fc_cls
  mmaction/models/backbones/resnet3d_slowfast.py    ResNet3dPathway laterals, ResNet3dSlowFast
  mmaction/models/heads/slowfast_head.py            concatenation (fast, slow)
  configs/_base_/models/i3d_r50.py, slowonly_r50.py; configs/recognition/i3d/
  i3d_imagenet-pretrained-r50-nl-{dot-product,embedded-gaussian}_*.py (non_local flags and
  non_local_cfg = sub_sample True, use_scale False, norm BN3d)
  mmaction/models/backbones/x3d.py  SEModule L15-54, BlockX3D L57-175 (conv1 ReLU, conv2
                                   depthwise + BN, SE, swish, conv3 + BN, downsample ConvModule
                                   with BN, ReLU after the sum), X3D L219-318 (widths 24·2^i
                                   rounded by gamma_w, inner × gamma_b, ⌈gamma_d · (1, 2, 5, 3)⌉
                                   blocks, SE on even blocks), _make_stem_layer L443-466, forward
                                   L518-524
  mmaction/models/heads/x3d_head.py L25-92          pool, fc1 (no bias), ReLU, dropout, fc2
  configs/_base_/models/x3d.py                      gamma_w 1, gamma_b 2.25, gamma_d 2.2
  mmaction/models/backbones/resnet3d_csn.py         CSNBottleneck3d L35-74 (conv2 = Sequential of
                                   [1x1x1 ConvModule, 'ip' only] and the depthwise ConvModule),
                                   ResNet3dCSN L113-146 (temporal strides (1, 2, 2, 2), BN eps
                                   1e-3, inflate_style '3x3x3': resnet3d.py L254-258)
  configs/_base_/models/ircsn_r152.py               depth 152, with_pool2 False, 'ir'
  mmaction/models/common/conv2plus1d.py L36-111     Conv2plus1d: conv_s (1, k, k), bn_s (its own
                                   BN3d), ReLU, conv_t (k, 1, 1); mid width L73-77
  mmaction/models/backbones/resnet2plus1d.py        ResNet3d with every ConvModule's conv a
                                   Conv2plus1d, no pool2; resnet3d.py BasicBlock3d L53-162
  configs/_base_/models/r2plus1d_r34.py             depth 34, norm eps 1e-3, conv1 (3, 7, 7),
                                   spatial and temporal strides (1, 2, 2, 2)

Weights are seeded random, BatchNorm randomised by export_zoo_parity.randomise_bn (affine drawn,
running statistics calibrated on random clips and perturbed). Writes into OUT:

  model.pth    {"state_dict": ..., "meta": {}} as mmaction2 saves checkpoints
  input.npy    float32 [B, T, 3, H, W] (vidkit's layout; the model sees [B, 3, T, H, W])
  logits.npy   float32 [B, classes]
  logits_bf16.npy  float32, the same under torch.autocast("cpu", bfloat16): the yardstick of
               vidkit's --precision bf16 (bins/tests/common/precision.rs)
  meta.json

Usage: export_mmaction3d_parity.py --arch ARCH --out DIR [--frames 16]
       [--size 64x80] [--classes 11] [--batch 2] [--seed 0] [--non-local FLAGS --nl-mode dot_product]
       [--alpha 8 --fusion-kernel 5] [--gamma-w 1] [--depth 152 --csn-mode ir] [--base-channels 64]

ARCH: i3d_r50, slow_r50, slowfast_r50; x3d_xs/s/m/l (mmaction2's X3D with gamma_d 2.2, or 5.0
for l; --gamma-w narrows it); csn_r101 (ResNet3dCSN of --depth 50/101/152, --csn-mode ir/ip,
--base-channels); r2plus1d_r34 (ResNet2Plus1d of --depth 18/34, --base-channels), which vidkit
refuses: it is restated for that refusal.
"""
import argparse
import json
import math
import os
import sys
import warnings

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_zoo_parity import randomise_bn  # noqa: E402

warnings.filterwarnings("ignore")


def closes_mmaction2_branch(name):
    """The BNs that close a residual branch: a bottleneck's conv3, a non-local block's conv_out."""
    return name.endswith("conv3.bn") or name.endswith("conv_out.bn")


class Conv2plus1d(nn.Module):
    """mmaction2 Conv2plus1d (common/conv2plus1d.py): conv_s, bn_s (BN3d of its own default
    norm_cfg: ConvModule does not pass its norm_cfg to the conv), ReLU, conv_t; `groups` is
    stored there but not used by the convs."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0, bias=True, groups=1):
        super().__init__()
        k, st, p = (v if isinstance(v, (tuple, list)) else (v,) * 3 for v in (kernel, stride, padding))
        mid = int(3 * (cin * cout * k[1] * k[2]) / (cin * k[1] * k[2] + 3 * cout))
        self.conv_s = nn.Conv3d(cin, mid, (1, k[1], k[2]), stride=(1, st[1], st[2]), padding=(0, p[1], p[2]),
                                bias=bias)
        self.bn_s = nn.BatchNorm3d(mid)
        self.relu = nn.ReLU()
        self.conv_t = nn.Conv3d(mid, cout, (k[0], 1, 1), stride=(st[0], 1, 1), padding=(p[0], 0, 0), bias=bias)

    def forward(self, x):
        return self.conv_t(self.relu(self.bn_s(self.conv_s(x))))


class ConvModule(nn.Module):
    """mmcv ConvModule restated for Conv3d (or Conv2plus1d) / BN3d (eps from norm_cfg) / ReLU."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0, norm=True, act=True, bias="auto", groups=1,
                 eps=1e-5, conv=nn.Conv3d):
        super().__init__()
        if bias == "auto":
            bias = not norm
        self.conv = conv(cin, cout, kernel, stride=stride, padding=padding, bias=bias, groups=groups)
        if norm:
            self.bn = nn.BatchNorm3d(cout, eps=eps)
        self.act = nn.ReLU() if act else None

    def forward(self, x):
        x = self.conv(x)
        if hasattr(self, "bn"):
            x = self.bn(x)
        return self.act(x) if self.act is not None else x


class NonLocal3d(nn.Module):
    """mmcv NonLocal3d, modes embedded_gaussian and dot_product."""

    def __init__(self, cin, reduction=2, use_scale=True, norm=False, mode="embedded_gaussian", sub_sample=False):
        super().__init__()
        self.inter = max(cin // reduction, 1)
        self.use_scale, self.mode = use_scale, mode
        self.g = ConvModule(cin, self.inter, 1, norm=False, act=False)
        self.conv_out = ConvModule(self.inter, cin, 1, norm=norm, act=False)
        self.theta = ConvModule(cin, self.inter, 1, norm=False, act=False)
        self.phi = ConvModule(cin, self.inter, 1, norm=False, act=False)
        if sub_sample:
            pool = nn.MaxPool3d(kernel_size=(1, 2, 2))
            self.g = nn.Sequential(self.g, pool)
            self.phi = nn.Sequential(self.phi, pool)

    def forward(self, x):
        n = x.size(0)
        g_x = self.g(x).view(n, self.inter, -1).permute(0, 2, 1)
        theta_x = self.theta(x).view(n, self.inter, -1).permute(0, 2, 1)
        phi_x = self.phi(x).view(n, self.inter, -1)
        w = torch.matmul(theta_x, phi_x)
        if self.mode == "embedded_gaussian":
            if self.use_scale:
                w = w / theta_x.shape[-1] ** 0.5
            w = w.softmax(dim=-1)
        else:
            w = w / w.shape[-1]
        y = torch.matmul(w, g_x).permute(0, 2, 1).contiguous().reshape(n, self.inter, *x.size()[2:])
        return x + self.conv_out(y)


class Bottleneck3d(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, spatial_stride=1, temporal_stride=1, downsample=None,
                 inflate=True, non_local=False, non_local_cfg=None):
        super().__init__()
        k1, p1 = ((3, 1, 1), (1, 0, 0)) if inflate else ((1, 1, 1), (0, 0, 0))
        self.conv1 = ConvModule(inplanes, planes, k1, stride=1, padding=p1)
        self.conv2 = ConvModule(planes, planes, (1, 3, 3), stride=(temporal_stride, spatial_stride, spatial_stride),
                                padding=(0, 1, 1))
        self.conv3 = ConvModule(planes, planes * 4, 1, act=False)
        self.downsample = downsample
        self.relu = nn.ReLU()
        self.non_local = non_local
        if non_local:
            self.non_local_block = NonLocal3d(planes * 4, **(non_local_cfg or {}))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.conv3(self.conv2(self.conv1(x))) + identity)
        return self.non_local_block(out) if self.non_local else out


class ResNet3d(nn.Module):
    """ResNet3d; with `lateral_inplanes` the input widths of a SlowFast slow pathway
    (ResNet3dPathway._calculate_lateral_inplanes, resnet3d_slowfast.py L179-201)."""

    def __init__(self, conv1_kernel, conv1_stride_t, pool1_stride_t, with_pool2, inflate, non_local, non_local_cfg,
                 base_channels=64, lateral_inplanes=(0, 0, 0, 0)):
        super().__init__()
        base = base_channels
        self.conv1 = ConvModule(3, base, conv1_kernel, stride=(conv1_stride_t, 2, 2),
                                padding=tuple((k - 1) // 2 for k in conv1_kernel))
        self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(pool1_stride_t, 2, 2), padding=(0, 1, 1))
        self.pool2 = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1))
        self.with_pool2 = with_pool2
        inplanes = base
        for i, blocks in enumerate((3, 4, 6, 3)):
            planes = base * 2**i
            stride = 1 if i == 0 else 2
            infl = inflate[i] if isinstance(inflate[i], (tuple, list)) else (inflate[i],) * blocks
            nl = non_local[i]
            inplanes += lateral_inplanes[i]
            downsample = None
            if stride != 1 or inplanes != planes * 4:
                downsample = ConvModule(inplanes, planes * 4, 1, stride=(1, stride, stride), act=False)
            layers = []
            for j in range(blocks):
                layers.append(Bottleneck3d(inplanes, planes, stride if j == 0 else 1, 1,
                                           downsample if j == 0 else None, infl[j] == 1, nl[j] == 1, non_local_cfg))
                inplanes = planes * 4
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            if i == 0 and self.with_pool2:
                x = self.pool2(x)
        return x


class I3DHead(nn.Module):
    def __init__(self, num_classes, in_channels=2048, dropout_ratio=0.5):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout_ratio)
        self.fc_cls = nn.Linear(in_channels, num_classes)
        self.avg_pool = nn.AdaptiveAvgPool3d((1, 1, 1))

    def forward(self, x):
        x = self.dropout(self.avg_pool(x))
        return self.fc_cls(x.view(x.shape[0], -1))


class ResNet3dSlowFast(nn.Module):
    """ResNet3dSlowFast with resample_rate = speed_ratio = alpha, channel_ratio 8, lateral_norm
    False (resnet3d_slowfast.py L102-177 laterals, L476-510 forward)."""

    def __init__(self, alpha, fusion_kernel):
        super().__init__()
        self.alpha = alpha
        no_nl = ((0,) * 3, (0,) * 4, (0,) * 6, (0,) * 3)
        lateral = [64 * 2 // 8, 256 * 2 // 8, 512 * 2 // 8, 1024 * 2 // 8]
        self.slow_path = ResNet3d((1, 7, 7), 1, 1, False, (0, 0, 1, 1), no_nl, None, 64, lateral)
        self.fast_path = ResNet3d((5, 7, 7), 1, 1, False, (1, 1, 1, 1), no_nl, None, 8)

        def lateral_conv(c):
            return ConvModule(c, c * 2, (fusion_kernel, 1, 1), stride=(alpha, 1, 1),
                              padding=((fusion_kernel - 1) // 2, 0, 0), norm=False, act=False, bias=False)

        self.slow_path.conv1_lateral = lateral_conv(8)
        for i, c in enumerate((32, 64, 128)):
            setattr(self.slow_path, f"layer{i + 1}_lateral", lateral_conv(c))

    def forward(self, x):
        interp = nn.functional.interpolate
        sp, fp = self.slow_path, self.fast_path
        xs = sp.maxpool(sp.conv1(interp(x, mode="nearest", scale_factor=(1.0 / self.alpha, 1.0, 1.0))))
        xf = fp.maxpool(fp.conv1(interp(x, mode="nearest", scale_factor=(1.0, 1.0, 1.0))))
        xs = torch.cat((xs, sp.conv1_lateral(xf)), dim=1)
        for i in range(4):
            xs = getattr(sp, f"layer{i + 1}")(xs)
            xf = getattr(fp, f"layer{i + 1}")(xf)
            if i != 3:
                xs = torch.cat((xs, getattr(sp, f"layer{i + 1}_lateral")(xf)), dim=1)
        return xs, xf


class SlowFastHead(I3DHead):
    """slowfast_head.py forward: pool each pathway, concatenate (fast, slow), dropout, fc_cls."""

    def forward(self, x):
        xs, xf = x
        y = self.dropout(torch.cat((self.avg_pool(xf), self.avg_pool(xs)), dim=1))
        return self.fc_cls(y.view(y.shape[0], -1))


def round_width(width, multiplier, min_width=8, divisor=8):
    """X3D._round_width and SEModule._round_width (x3d.py L29-37, L321-332)."""
    width *= multiplier
    out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if out < 0.9 * width:
        out += divisor
    return int(out)


class SEModule(nn.Module):
    def __init__(self, channels, reduction):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool3d(1)
        self.bottleneck = round_width(channels, reduction)
        self.fc1 = nn.Conv3d(channels, self.bottleneck, kernel_size=1, padding=0)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv3d(self.bottleneck, channels, kernel_size=1, padding=0)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BlockX3D(nn.Module):
    def __init__(self, inplanes, planes, outplanes, spatial_stride=1, downsample=None, se_ratio=None):
        super().__init__()
        self.downsample = downsample
        self.conv1 = ConvModule(inplanes, planes, 1, bias=False)
        self.conv2 = ConvModule(planes, planes, 3, stride=(1, spatial_stride, spatial_stride), padding=1,
                                groups=planes, bias=False, act=False)
        self.conv3 = ConvModule(planes, outplanes, 1, bias=False, act=False)
        self.se_ratio = se_ratio
        if se_ratio is not None:
            self.se_module = SEModule(planes, se_ratio)
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.conv2(self.conv1(x))
        if self.se_ratio is not None:
            out = self.se_module(out)
        out = self.conv3(out * torch.sigmoid(out))  # mmcv Swish
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class X3D(nn.Module):
    """X3D with spatial_strides (2, 2, 2, 2), se_style 'half', se_ratio 1/16, use_swish."""

    def __init__(self, gamma_w=1.0, gamma_b=2.25, gamma_d=2.2, se_ratio=1 / 16):
        super().__init__()
        base = round_width(24, gamma_w)
        stage_blocks = [int(math.ceil(gamma_d * b)) for b in (1, 2, 5, 3)]
        self.conv1_s = ConvModule(3, base, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False, norm=False,
                                  act=False)
        self.conv1_t = ConvModule(base, base, (5, 1, 1), padding=(2, 0, 0), groups=base, bias=False)
        layer_inplanes = base
        for i, blocks in enumerate(stage_blocks):
            inplanes = base * 2**i
            planes = int(inplanes * gamma_b)
            # make_res_layer L389-400: spatial stride 2 in every stage, so always a downsample
            downsample = ConvModule(layer_inplanes, inplanes, 1, stride=(1, 2, 2), bias=False, act=False)
            layers = [BlockX3D(layer_inplanes, planes, inplanes, 2, downsample, se_ratio)]
            for j in range(1, blocks):
                layers.append(BlockX3D(inplanes, planes, inplanes, 1, None, se_ratio if j % 2 == 0 else None))
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            layer_inplanes = inplanes
        feat = base * 2 ** (len(stage_blocks) - 1)
        self.conv5 = ConvModule(feat, int(feat * gamma_b), 1, bias=False)
        self.feat_dim = int(feat * gamma_b)

    def forward(self, x):
        x = self.conv1_t(self.conv1_s(x))
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.conv5(x)


class X3DHead(nn.Module):
    def __init__(self, num_classes, in_channels, dropout_ratio=0.5, fc1_bias=False):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout_ratio)
        self.fc1 = nn.Linear(in_channels, 2048, bias=fc1_bias)
        self.fc2 = nn.Linear(2048, num_classes)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool3d((1, 1, 1))

    def forward(self, x):
        x = self.pool(x).view(x.shape[0], -1)
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


class CSNBottleneck3d(nn.Module):
    """Bottleneck3d with inflate_style '3x3x3' (conv1 1x1x1; conv2 3x3x3 with the (temporal,
    spatial, spatial) stride, style 'pytorch') whose conv2 CSNBottleneck3d replaces by a depthwise
    ConvModule, after a 1x1x1 ConvModule without activation in mode 'ip'."""
    expansion = 4

    def __init__(self, inplanes, planes, spatial_stride, temporal_stride, downsample, mode, eps):
        super().__init__()
        self.conv1 = ConvModule(inplanes, planes, 1, bias=False, eps=eps)
        conv2 = []
        if mode == "ip":
            conv2.append(ConvModule(planes, planes, 1, bias=False, act=False, eps=eps))
        conv2.append(ConvModule(planes, planes, 3, stride=(temporal_stride, spatial_stride, spatial_stride),
                                padding=1, bias=False, groups=planes, eps=eps))
        self.conv2 = nn.Sequential(*conv2)
        self.conv3 = ConvModule(planes, planes * 4, 1, bias=False, act=False, eps=eps)
        self.downsample = downsample
        self.relu = nn.ReLU()

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class BasicBlock3d(nn.Module):
    """resnet3d.py BasicBlock3d, inflated: conv1 (3, 3, 3) with the strides, conv2 (3, 3, 3)."""
    expansion = 1

    def __init__(self, inplanes, planes, spatial_stride, temporal_stride, downsample, eps, conv):
        super().__init__()
        self.conv1 = ConvModule(inplanes, planes, 3, stride=(temporal_stride, spatial_stride, spatial_stride),
                                padding=1, bias=False, eps=eps, conv=conv)
        self.conv2 = ConvModule(planes, planes, 3, padding=1, bias=False, act=False, eps=eps, conv=conv)
        self.downsample = downsample
        self.relu = nn.ReLU()

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + identity)


class ResNet3dTS(nn.Module):
    """ResNet3d with temporal strides (1, 2, 2, 2), spatial (1, 2, 2, 2), conv1 (3, 7, 7), the
    max pool and no pool2, as ResNet3dCSN (block CSNBottleneck3d) and ResNet2Plus1d (block
    BasicBlock3d, every conv a Conv2plus1d) build it; `make_block(inplanes, planes, s, t,
    downsample)`."""

    def __init__(self, block, stage_blocks, base_channels, eps, make_block, conv=nn.Conv3d):
        super().__init__()
        self.conv1 = ConvModule(3, base_channels, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False,
                                eps=eps, conv=conv)
        self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        inplanes = base_channels
        for i, blocks in enumerate(stage_blocks):
            planes = base_channels * 2**i
            s = t = 1 if i == 0 else 2
            downsample = None
            if s != 1 or inplanes != planes * block.expansion:
                downsample = ConvModule(inplanes, planes * block.expansion, 1, stride=(t, s, s), bias=False,
                                        act=False, eps=eps, conv=conv)
            layers = [make_block(inplanes, planes, s, t, downsample)]
            inplanes = planes * block.expansion
            layers += [make_block(inplanes, planes, 1, 1, None) for _ in range(1, blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        self.feat_dim = inplanes

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return x


class Recognizer3D(nn.Module):
    def __init__(self, backbone, cls_head):
        super().__init__()
        self.backbone, self.cls_head = backbone, cls_head

    def forward(self, x):
        return self.cls_head(self.backbone(x))


def build(a):
    no_nl = ((0,) * 3, (0,) * 4, (0,) * 6, (0,) * 3)
    nl = tuple(tuple(int(f) for f in s.split(",")) for s in a.non_local.split(";")) if a.non_local else no_nl
    nl_cfg = dict(sub_sample=True, use_scale=False, norm=True, mode=a.nl_mode)
    if a.arch == "i3d_r50":
        backbone = ResNet3d((5, 7, 7), 2, 2, True, ((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0)), nl, nl_cfg)
    elif a.arch == "slow_r50":
        backbone = ResNet3d((1, 7, 7), 1, 1, False, (0, 0, 1, 1), nl, nl_cfg)
    elif a.arch == "slowfast_r50":
        # configs/_base_/models/slowfast_r50.py (alpha 8, fusion 5) or the 8x8x1 configs (4, 7)
        return Recognizer3D(ResNet3dSlowFast(a.alpha, a.fusion_kernel), SlowFastHead(a.classes, 2048 + 256))
    elif a.arch.startswith("x3d_"):
        backbone = X3D(gamma_w=a.gamma_w, gamma_d=5.0 if a.arch == "x3d_l" else 2.2)
        return Recognizer3D(backbone, X3DHead(a.classes, backbone.feat_dim))
    elif a.arch == "csn_r101":
        # configs/_base_/models/ircsn_r152.py with depth and bottleneck_mode from the arguments
        depths = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}[a.depth]

        def csn_block(inplanes, planes, s, t, downsample):
            return CSNBottleneck3d(inplanes, planes, s, t, downsample, a.csn_mode, 1e-3)

        backbone = ResNet3dTS(CSNBottleneck3d, depths, a.base_channels, 1e-3, csn_block)
    elif a.arch == "r2plus1d_r34":
        # configs/_base_/models/r2plus1d_r34.py (depth 18 or 34: BasicBlock3d)
        depths = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}[a.depth]

        def basic_block(inplanes, planes, s, t, downsample):
            return BasicBlock3d(inplanes, planes, s, t, downsample, 1e-3, Conv2plus1d)

        backbone = ResNet3dTS(BasicBlock3d, depths, a.base_channels, 1e-3, basic_block, Conv2plus1d)
    else:
        raise SystemExit(f"unsupported arch {a.arch}")
    return Recognizer3D(backbone, I3DHead(a.classes, getattr(backbone, "feat_dim", 2048)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    archs = ["i3d_r50", "slow_r50", "slowfast_r50", "x3d_xs", "x3d_s", "x3d_m", "x3d_l", "csn_r101",
             "r2plus1d_r34"]
    ap.add_argument("--arch", required=True, choices=archs)
    ap.add_argument("--alpha", type=int, default=8, help="SlowFast speed ratio (= resample rate)")
    ap.add_argument("--fusion-kernel", type=int, default=5, help="SlowFast lateral kernel")
    ap.add_argument("--gamma-w", type=float, default=1.0, help="X3D width factor (base 24 · gamma_w, rounded)")
    ap.add_argument("--depth", type=int, help="ResNet3dCSN 50/101/152 (152), ResNet2Plus1d 18/34 (34)")
    ap.add_argument("--csn-mode", default="ir", choices=["ir", "ip"], help="CSN bottleneck_mode")
    ap.add_argument("--base-channels", type=int, default=64, help="ResNet3dCSN / ResNet2Plus1d width")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", default="64x80")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=11)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--non-local", help="per-stage 0/1 flags, e.g. '0,0,0;0,1,0,1;0,1,0,1,0,1;0,0,0'")
    ap.add_argument("--nl-mode", default="dot_product", choices=["dot_product", "embedded_gaussian"])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.depth is None:
        a.depth = {"csn_r101": 152, "r2plus1d_r34": 34}.get(a.arch)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    h, w = (int(v) for v in a.size.split("x"))
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed + 1)
    model = build(a)
    calib = [torch.randn(4, 3, a.frames, h, w, generator=gen) for _ in range(2)]
    randomise_bn(model, gen, calib, closes_mmaction2_branch)
    x = torch.randn(a.batch, a.frames, 3, h, w, generator=gen)
    with torch.no_grad():
        logits = model(x.permute(0, 2, 1, 3, 4).contiguous())
        # PyTorch's bf16 CPU mode on the same weights and input: the yardstick for vidkit's bf16.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits_bf16 = model(x.permute(0, 2, 1, 3, 4).contiguous()).float()
    os.makedirs(a.out, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "meta": {}}, os.path.join(a.out, "model.pth"))
    for name, t in (("input", x), ("logits", logits), ("logits_bf16", logits_bf16)):
        np.save(os.path.join(a.out, f"{name}.npy"), t.detach().numpy().astype("<f4"))
    keys = ("arch", "frames", "size", "classes", "seed", "non_local", "nl_mode", "alpha", "fusion_kernel", "gamma_w",
            "depth", "csn_mode", "base_channels")
    meta = {k: getattr(a, k) for k in keys}
    meta.update(torch=torch.__version__, max_abs_logit=float(logits.abs().max()))
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f)


if __name__ == "__main__":
    main()
